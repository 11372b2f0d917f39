//! Switchyard: a selective forwarding unit for multi-party meetings.
//!
//! - [`room`]: the pure core (no I/O, no clock, no webrtc types).
//! - [`rtc`]: the only server code that names webrtc-rs types: peers, tracks, the room actor.
//! - [`signal`]: HTTP and WebSocket signaling (axum).
//! - [`synthetic`]: headless participants for the tests and the load tester.

pub mod config;
pub mod error;
pub mod id;
pub mod metrics;
pub mod room;
pub mod rtc;
pub mod server;
pub mod signal;
pub mod synthetic;
