//! One published track: what it carries and its keyframe-request throttle.

use std::time::{Duration, Instant};

use super::codec::Codec;
use crate::id::{MediaKind, ParticipantId, TrackId};

/// At most one keyframe request per producer per this interval; requests inside the window
/// are coalesced into one sent when it ends (mediasoup and LiveKit use the same order).
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Producer {
    pub id: TrackId,
    pub owner: ParticipantId,
    pub kind: MediaKind,
    pub codec: Codec,
    pub packets_in: u64,
    pub keyframes_in: u64,
    pub keyframe_throttle: KeyframeThrottle,
}

impl Producer {
    pub fn new(id: TrackId, owner: ParticipantId, kind: MediaKind, codec: Codec) -> Self {
        Producer {
            id,
            owner,
            kind,
            codec,
            packets_in: 0,
            keyframes_in: 0,
            keyframe_throttle: KeyframeThrottle::default(),
        }
    }
}

/// Coalesces keyframe requests (PLI/FIR from subscribers, new subscribers) so a publisher
/// sees at most one per [`KEYFRAME_REQUEST_INTERVAL`]. Time is an input.
#[derive(Debug, Default)]
pub struct KeyframeThrottle {
    last_sent: Option<Instant>,
    pending: bool,
    /// Requests absorbed by the throttle (counted, not logged).
    pub coalesced: u64,
    pub sent: u64,
}

impl KeyframeThrottle {
    /// Records a request. Returns true when it should be sent to the publisher now.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(last) if now.saturating_duration_since(last) < KEYFRAME_REQUEST_INTERVAL => {
                if self.pending {
                    self.coalesced += 1;
                }
                self.pending = true;
                false
            }
            _ => {
                self.mark_sent(now);
                true
            }
        }
    }

    /// When a deferred request is due, if one is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (true, Some(last)) => Some(last + KEYFRAME_REQUEST_INTERVAL),
            _ => None,
        }
    }

    /// Returns true when a deferred request is due at `now` (and marks it sent).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.poll_timeout() {
            Some(due) if now >= due => {
                self.mark_sent(now);
                true
            }
            _ => false,
        }
    }

    /// A keyframe arrived: requests waiting for one are answered already.
    pub fn keyframe_received(&mut self) {
        self.pending = false;
    }

    fn mark_sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.pending = false;
        self.sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_goes_out_at_once() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0));
        assert_eq!(k.poll_timeout(), None);
    }

    #[test]
    fn requests_inside_the_window_coalesce_into_one_at_its_end() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0));
        for ms in [10, 200, 500, 900] {
            assert!(!k.request(t0 + Duration::from_millis(ms)));
        }
        assert_eq!(k.coalesced, 3);
        let due = k.poll_timeout().expect("a deferred request");
        assert_eq!(due, t0 + KEYFRAME_REQUEST_INTERVAL);
        assert!(!k.handle_timeout(due - Duration::from_millis(1)));
        assert!(k.handle_timeout(due));
        assert!(
            !k.handle_timeout(due + Duration::from_millis(1)),
            "only once"
        );
        assert_eq!(k.sent, 2);
    }

    #[test]
    fn a_keyframe_answers_waiting_requests() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        k.request(t0);
        k.request(t0 + Duration::from_millis(100));
        k.keyframe_received();
        assert_eq!(k.poll_timeout(), None);
    }

    #[test]
    fn ten_seconds_of_constant_requests_send_about_one_per_second() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        let mut sent = 0;
        for step in 0..1000u64 {
            let now = t0 + Duration::from_millis(step * 10);
            if k.handle_timeout(now) {
                sent += 1;
            }
            if k.request(now) {
                sent += 1;
            }
        }
        assert!((10..=11).contains(&sent), "sent {sent} in 10 s");
    }
}
