//! When to probe: padding sent above the current estimate to find out whether the
//! subscriber's downlink carries what its tiles want. Probes are short clusters at a
//! few times the estimate, at most every [`PROBE_INTERVAL`], and only while the
//! allocator wants more than the estimate gives (LiveKit and libwebrtc probe the same
//! way; we pad on the video legs rather than on an RTX stream, see docs/RTCP.md).

use std::time::{Duration, Instant};

pub const PROBE_INTERVAL: Duration = Duration::from_millis(1500);
/// A probe followed by congestion within this long was wrong (a shaper's burst bucket
/// let it through): the next one waits twice as long, up to [`MAX_BACKOFF`].
const FAILED_PROBE_WINDOW: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Three housekeeping ticks: long enough to measure (the receive span must be clearly
/// above timer noise), short enough that a probe into a full link costs little loss.
pub const PROBE_DURATION: Duration = Duration::from_millis(60);
/// A cluster aims at most this many times the current estimate (libwebrtc's periodic
/// probes use 2).
const MAX_STEP: f64 = 2.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeCluster {
    pub id: u32,
    pub bitrate: u64,
    pub until: Instant,
}

#[derive(Debug, Default)]
pub struct ProbeController {
    next_id: u32,
    active: Option<ProbeCluster>,
    /// Ended clusters wait here for their feedback before their result is taken.
    ended: Option<(u32, Instant)>,
    last_start: Option<Instant>,
    /// The wait between probes: [`PROBE_INTERVAL`], doubled after each failed one.
    interval: Duration,
    /// The last probe's verdict is still open (congestion may yet follow it).
    undecided: bool,
    pub started: u64,
}

impl ProbeController {
    pub fn active(&self) -> Option<ProbeCluster> {
        self.active
    }

    /// Starts a cluster if one is due: the allocator `wanted` more than `estimate`.
    pub fn maybe_start(
        &mut self,
        estimate: u64,
        wanted: u64,
        now: Instant,
    ) -> Option<ProbeCluster> {
        // The allocator spends 90 % of the estimate: probe when that does not cover it.
        if let Some(c) = self.active {
            if now < c.until {
                return None;
            }
            self.active = None;
            self.ended = Some((c.id, now));
        }
        if wanted as f64 <= estimate as f64 * 0.9 {
            return None;
        }
        // A probe that held (no congestion followed it) resets the wait.
        if self.undecided
            && self
                .last_start
                .is_some_and(|t| now.saturating_duration_since(t) >= FAILED_PROBE_WINDOW)
        {
            self.undecided = false;
            self.interval = PROBE_INTERVAL;
        }
        let interval = self.interval.max(PROBE_INTERVAL);
        if self
            .last_start
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return None;
        }
        self.next_id = self.next_id.wrapping_add(1);
        let target = (wanted as f64 * 1.2)
            .min(estimate as f64 * MAX_STEP)
            .max(estimate as f64 + 200_000.0);
        let cluster = ProbeCluster {
            id: self.next_id,
            bitrate: target as u64,
            until: now + PROBE_DURATION,
        };
        self.active = Some(cluster);
        self.last_start = Some(now);
        self.undecided = true;
        self.started += 1;
        Some(cluster)
    }

    /// The estimate was cut (congestion) at `at`: if that came soon after a probe, the
    /// probe overshot, and the next one waits longer.
    pub fn congestion(&mut self, at: Instant) {
        let after_probe = self
            .last_start
            .is_some_and(|t| at >= t && at.saturating_duration_since(t) < FAILED_PROBE_WINDOW);
        if after_probe && self.undecided {
            self.undecided = false;
            self.interval = (self.interval.max(PROBE_INTERVAL) * 2).min(MAX_BACKOFF);
        }
    }

    /// Padding bytes to send now for a tick of `tick` on top of `media_bps` already
    /// flowing; ends the cluster when its time is up.
    pub fn padding_bytes(&mut self, media_bps: u64, tick: Duration, now: Instant) -> usize {
        let Some(c) = self.active else {
            return 0;
        };
        if now >= c.until {
            self.active = None;
            self.ended = Some((c.id, now));
            return 0;
        }
        let extra = c.bitrate.saturating_sub(media_bps) as f64;
        (extra * tick.as_secs_f64() / 8.0) as usize
    }

    /// A cluster whose feedback should be in by now (a few hundred ms after its end).
    pub fn take_finished(&mut self, now: Instant) -> Option<u32> {
        match self.ended {
            Some((id, at)) if now.saturating_duration_since(at) >= Duration::from_millis(300) => {
                self.ended = None;
                Some(id)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_only_when_more_is_wanted_and_not_too_often() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = ProbeController::default();
        assert_eq!(
            p.maybe_start(1_000_000, 850_000, t0),
            None,
            "enough already"
        );
        let c = p.maybe_start(300_000, 3_000_000, t0).expect("a probe");
        assert_eq!(c.bitrate, 600_000, "at most 2x the estimate");
        assert_eq!(
            p.maybe_start(300_000, 3_000_000, ms(10)),
            None,
            "one at a time"
        );
        let bytes = p.padding_bytes(300_000, Duration::from_millis(20), ms(20));
        assert_eq!(bytes, 750, "300 kbit/s of padding for 20 ms");
        assert_eq!(
            p.padding_bytes(300_000, Duration::from_millis(20), ms(60)),
            0
        );
        assert_eq!(p.take_finished(ms(300)), None, "feedback not in yet");
        assert_eq!(p.take_finished(ms(600)), Some(c.id));
        assert_eq!(
            p.maybe_start(300_000, 3_000_000, ms(1000)),
            None,
            "interval"
        );
        assert!(p.maybe_start(900_000, 3_000_000, ms(1600)).is_some());
    }

    #[test]
    fn probes_that_end_in_congestion_back_off() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut p = ProbeController::default();
        assert!(p.maybe_start(300_000, 3_000_000, s(0)).is_some());
        p.congestion(s(1));
        assert!(
            p.maybe_start(300_000, 3_000_000, s(2)).is_none(),
            "waits 3 s now"
        );
        assert!(p.maybe_start(300_000, 3_000_000, s(3)).is_some());
        p.congestion(s(4));
        assert!(
            p.maybe_start(300_000, 3_000_000, s(8)).is_none(),
            "then 6 s"
        );
        assert!(p.maybe_start(300_000, 3_000_000, s(9)).is_some());
        // This one holds: no congestion within 2 s, so the wait is back to 1.5 s.
        assert!(p.maybe_start(300_000, 3_000_000, s(11)).is_some());
        p.congestion(s(20)); // long after: not the probe's fault
        assert!(p.maybe_start(300_000, 3_000_000, s(13)).is_some());
    }
}
