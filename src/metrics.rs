//! Process-wide media counters. The media path counts instead of logging per packet;
//! `/api/stats` reports these.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Metrics {
    pub rtp_in: AtomicU64,
    /// Incoming packets dropped because the room actor's inbox was full.
    pub rtp_in_dropped: AtomicU64,
    pub rtp_forwarded: AtomicU64,
    /// Forwarded packets dropped because one subscriber leg's queue was full.
    pub rtp_leg_dropped: AtomicU64,
    /// `write_rtp` errors on subscriber legs (leg not bound yet, connection gone).
    pub rtp_write_errors: AtomicU64,
    pub keyframe_requests_from_subscribers: AtomicU64,
    pub keyframe_requests_to_publishers: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct MetricsSnapshot {
    pub rtp_in: u64,
    pub rtp_in_dropped: u64,
    pub rtp_forwarded: u64,
    pub rtp_leg_dropped: u64,
    pub rtp_write_errors: u64,
    pub keyframe_requests_from_subscribers: u64,
    pub keyframe_requests_to_publishers: u64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            rtp_in: self.rtp_in.load(Relaxed),
            rtp_in_dropped: self.rtp_in_dropped.load(Relaxed),
            rtp_forwarded: self.rtp_forwarded.load(Relaxed),
            rtp_leg_dropped: self.rtp_leg_dropped.load(Relaxed),
            rtp_write_errors: self.rtp_write_errors.load(Relaxed),
            keyframe_requests_from_subscribers: self
                .keyframe_requests_from_subscribers
                .load(Relaxed),
            keyframe_requests_to_publishers: self.keyframe_requests_to_publishers.load(Relaxed),
        }
    }
}
