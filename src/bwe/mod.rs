//! Downlink bandwidth estimation for one subscriber connection, send-side and GCC-like
//! (delay gradient plus loss, after libwebrtc's goog_cc, str0m's `bwe` and
//! Signal-Calling-Service's `googcc`): the engine stamps every packet it sends on the
//! connection with a transport-wide sequence number, the browser's transport-cc
//! feedback says when each arrived, and [`Estimator`] turns that into a bitrate the
//! room's allocator splits across the tracks. [`ProbeController`] decides when to send
//! padding to find out whether more would fit.
//!
//! Pure: no clock (every instant is an argument), no I/O, no rtc types; O(1) work per
//! packet sent, O(packets reported) per feedback. We do not use rtc's GCC interceptor:
//! it prunes its history by scanning every outstanding packet on each timeout, which
//! cost ~17 us per packet per leg on our path (docs/RTCP.md).

mod delay;
mod estimator;
mod history;
mod probe;

pub use delay::{DelayDetector, Usage};
pub use estimator::{Estimator, MAX_BITRATE, MIN_BITRATE, START_BITRATE};
pub use history::{SendHistory, Sent};
pub use probe::{ProbeCluster, ProbeController};
