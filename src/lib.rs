//! Switchyard: a selective forwarding unit for multi-party meetings.
//!
//! - [`room`]: the pure core (no I/O, no clock, no webrtc types).
//! - [`engine`]: the media engine, the only server code naming rtc types: shards (one
//!   thread, one UDP port each), the demux, sans-I/O peer connections, batched UDP.
//! - [`signal`]: HTTP and WebSocket signaling (axum).
//!
//! The synthetic participants the tests and the load tester use live in their own crate of
//! the workspace (`tests/synthetic`), so the server never links the async `webrtc` crate.

pub mod auth;
pub mod bitrate;
pub mod bwe;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod error;
pub mod id;
pub mod metrics;
pub mod rate_limit;
pub mod room;
pub mod secret;
pub mod server;
pub mod signal;
pub mod turn;
pub mod webhook;
