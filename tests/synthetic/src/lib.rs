//! Synthetic participants: real webrtc-rs clients that join through the signaling API
//! and publish media whose payloads carry a counter and a send timestamp. The
//! integration tests and the load tester (`switchyard-load`) are built on them.

pub mod endpoint;
pub mod http;
pub mod janus;
pub mod link;
pub mod lite;
pub mod media;
pub mod participant;
pub mod peer;
pub mod pool;
pub mod sim;
pub mod stats;

pub use media::{now_micros, MediaPlan, Video, OPUS_PT, VP8_PT};
pub use participant::{Shared, SyntheticError, SyntheticParticipant};
pub use stats::{percentile, StreamStats};
