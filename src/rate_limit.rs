//! A token bucket (signaling clients, chat senders). Pure: time is an argument.
//!
//! One client's flood (say, thousands of `mute` toggles a second, each fanned out to
//! everyone in the room) must not fill the other participants' queues or the shard's:
//! the session refuses what exceeds the budget with `rate_limited` and never forwards it.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimit {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// `burst` messages at once, `per_second` sustained.
    pub fn new(burst: u32, per_second: u32, now: Instant) -> RateLimit {
        RateLimit {
            capacity: burst as f64,
            per_second: per_second as f64,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next message would be allowed.
    pub fn wait(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.per_second).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, 5, t0);
        assert_eq!((0..20).filter(|_| r.allow(t0)).count(), 10, "the burst");
        assert!(!r.allow(t0));
        assert!(r.wait() > Duration::ZERO);
        // 1 s later: 5 more, not 10.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..20).filter(|_| r.allow(t1)).count(), 5);
        // A long pause refills to the burst, never beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| r.allow(t2)).count(), 10);
    }

    #[test]
    fn time_going_backwards_grants_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut r = RateLimit::new(1, 1, t0);
        assert!(r.allow(t0));
        assert!(!r.allow(t0 - Duration::from_secs(5)));
    }
}
