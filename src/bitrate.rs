//! A windowed bitrate, cheap enough to update on every packet: what a published layer
//! brings in (room/producer.rs) and what a connection sends (bwe/history.rs).

use std::time::{Duration, Instant};

/// Bits per second over the last one to two buckets (half a second each by default):
/// O(1) per packet.
#[derive(Debug)]
pub struct BitrateMeter {
    bucket: Duration,
    bucket_start: Option<Instant>,
    current: u64,
    previous: u64,
}

impl Default for BitrateMeter {
    fn default() -> Self {
        BitrateMeter::with_bucket(Duration::from_millis(500))
    }
}

impl BitrateMeter {
    pub fn with_bucket(bucket: Duration) -> BitrateMeter {
        BitrateMeter {
            bucket,
            bucket_start: None,
            current: 0,
            previous: 0,
        }
    }

    pub fn add(&mut self, bytes: usize, now: Instant) {
        self.rotate(now);
        self.current += bytes as u64;
    }

    fn rotate(&mut self, now: Instant) {
        match self.bucket_start {
            Some(start) if now.saturating_duration_since(start) < self.bucket => {}
            Some(start) => {
                let stale = now.saturating_duration_since(start) >= 2 * self.bucket;
                self.previous = if stale { 0 } else { self.current };
                self.current = 0;
                self.bucket_start = Some(now);
            }
            None => self.bucket_start = Some(now),
        }
    }

    pub fn bits_per_second(&self, now: Instant) -> u64 {
        let Some(start) = self.bucket_start else {
            return 0;
        };
        let in_current = now.saturating_duration_since(start);
        if in_current >= 2 * self.bucket {
            return 0;
        }
        let (bytes, span) = if in_current >= self.bucket {
            (self.current, in_current)
        } else {
            (self.previous + self.current, self.bucket + in_current)
        };
        (bytes * 8 * 1000) / (span.as_millis().max(1) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrate_meter_measures_the_last_second() {
        let t0 = Instant::now();
        let mut m = BitrateMeter::default();
        for i in 0..100u64 {
            m.add(1250, t0 + Duration::from_millis(i * 10)); // 1 Mbit/s
        }
        let rate = m.bits_per_second(t0 + Duration::from_millis(1000));
        assert!((900_000..=1_100_000).contains(&rate), "{rate}");
        assert_eq!(m.bits_per_second(t0 + Duration::from_secs(3)), 0, "silence");
    }
}
