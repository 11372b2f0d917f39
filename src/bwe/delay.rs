//! The delay half of GCC: whether the path's queue is growing. Packets are grouped by
//! send time into bursts; the change in one-way delay between groups is smoothed and
//! a least-squares trend over the last groups is compared with an adaptive threshold
//! (libwebrtc's TrendlineEstimator and OveruseDetector, with their constants).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Packets sent within this of a group's first belong to it (a frame's burst).
const BURST: Duration = Duration::from_millis(5);
/// Groups in the trend's window.
const WINDOW: usize = 20;
const SMOOTHING: f64 = 0.9;
const THRESHOLD_GAIN: f64 = 4.0;
/// Overuse must last this long before it counts (one noisy group does not).
const OVERUSE_TIME_MS: f64 = 10.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Normal,
    /// The queue grows: send less.
    Over,
    /// The queue drains: hold, the estimate is about to be confirmed.
    Under,
}

#[derive(Clone, Copy, Debug)]
struct Group {
    first_departure: Instant,
    last_departure: Instant,
    last_arrival: Duration,
}

#[derive(Debug)]
pub struct DelayDetector {
    current: Option<Group>,
    previous: Option<Group>,
    first_arrival: Option<Duration>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    /// (arrival ms since the first, smoothed accumulated delay ms)
    points: VecDeque<(f64, f64)>,
    threshold: f64,
    last_threshold_update: Option<Duration>,
    overuse_ms: f64,
    overuse_count: u32,
    previous_trend: f64,
    usage: Usage,
}

impl Default for DelayDetector {
    fn default() -> Self {
        DelayDetector {
            current: None,
            previous: None,
            first_arrival: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            points: VecDeque::with_capacity(WINDOW + 1),
            threshold: 12.5,
            last_threshold_update: None,
            overuse_ms: 0.0,
            overuse_count: 0,
            previous_trend: 0.0,
            usage: Usage::Normal,
        }
    }
}

impl DelayDetector {
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// One packet that arrived, in arrival order: when it left and when it arrived
    /// (on the receiver's clock, any origin).
    pub fn packet(&mut self, departure: Instant, arrival: Duration) {
        let group = match self.current.as_mut() {
            Some(g) if departure.saturating_duration_since(g.first_departure) <= BURST => {
                if departure > g.last_departure {
                    g.last_departure = departure;
                }
                g.last_arrival = g.last_arrival.max(arrival);
                return;
            }
            // A reordered packet from an older group: ignored, as libwebrtc does.
            Some(g) if departure < g.first_departure => return,
            _ => Group {
                first_departure: departure,
                last_departure: departure,
                last_arrival: arrival,
            },
        };
        if let (Some(prev), Some(cur)) = (self.previous, self.current) {
            let send_delta = ms(cur
                .last_departure
                .saturating_duration_since(prev.last_departure));
            let arrival_delta = ms_signed(cur.last_arrival, prev.last_arrival);
            self.trend(arrival_delta - send_delta, cur.last_arrival, arrival_delta);
        }
        self.previous = self.current;
        self.current = Some(group);
    }

    fn trend(&mut self, delay_delta_ms: f64, arrival: Duration, arrival_delta_ms: f64) {
        let first = *self.first_arrival.get_or_insert(arrival);
        self.accumulated_ms += delay_delta_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        self.points
            .push_back((ms_signed(arrival, first), self.smoothed_ms));
        if self.points.len() > WINDOW {
            self.points.pop_front();
        }
        if self.points.len() < WINDOW {
            return;
        }
        let slope = linear_slope(&self.points).unwrap_or(self.previous_trend);
        let modified = WINDOW.min(60) as f64 * slope * THRESHOLD_GAIN;
        self.detect(modified, slope, arrival, arrival_delta_ms);
        self.previous_trend = slope;
    }

    fn detect(&mut self, modified: f64, slope: f64, arrival: Duration, delta_ms: f64) {
        if modified > self.threshold {
            self.overuse_ms += delta_ms.max(0.0);
            self.overuse_count += 1;
            if self.overuse_ms > OVERUSE_TIME_MS
                && self.overuse_count > 1
                && slope >= self.previous_trend
            {
                self.overuse_ms = 0.0;
                self.overuse_count = 0;
                self.usage = Usage::Over;
            }
        } else if modified < -self.threshold {
            self.overuse_ms = 0.0;
            self.overuse_count = 0;
            self.usage = Usage::Under;
        } else {
            self.overuse_ms = 0.0;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.adapt_threshold(modified, arrival);
    }

    /// The threshold follows the trend slowly (fast when the trend is below it), so
    /// competing TCP flows do not starve us and noise does not trigger us.
    fn adapt_threshold(&mut self, modified: f64, arrival: Duration) {
        let last = self.last_threshold_update.replace(arrival);
        if modified.abs() > self.threshold + 15.0 {
            return; // a spike: do not let it drag the threshold
        }
        let k = if modified.abs() < self.threshold {
            K_DOWN
        } else {
            K_UP
        };
        let dt = last.map_or(0.0, |l| ms_signed(arrival, l).clamp(0.0, 100.0));
        self.threshold =
            (self.threshold + k * (modified.abs() - self.threshold) * dt).clamp(6.0, 600.0);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ms_signed(a: Duration, b: Duration) -> f64 {
    if a >= b {
        ms(a - b)
    } else {
        -ms(b - a)
    }
}

fn linear_slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den != 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends a 1200-byte packet every 5 ms through a bottleneck of `kbps`, starting with
    /// an empty queue; returns the usage seen at the end.
    fn run(kbps: f64, packets: u32) -> Usage {
        let t0 = Instant::now();
        let mut d = DelayDetector::default();
        let service_ms = 1200.0 * 8.0 / kbps; // per packet at the bottleneck
        let mut link_free_ms: f64 = 0.0;
        for i in 0..packets {
            let sent_ms = i as f64 * 5.0;
            let start = link_free_ms.max(sent_ms);
            link_free_ms = start + service_ms;
            let arrival = Duration::from_micros(((link_free_ms + 20.0) * 1000.0) as u64);
            d.packet(
                t0 + Duration::from_micros((sent_ms * 1000.0) as u64),
                arrival,
            );
        }
        d.usage()
    }

    #[test]
    fn a_path_with_room_is_normal() {
        // 1.92 Mbit/s sent, 5 Mbit/s available.
        assert_eq!(run(5000.0, 400), Usage::Normal);
    }

    #[test]
    fn a_growing_queue_is_overuse() {
        // 1.92 Mbit/s sent into 1.5 Mbit/s: the queue grows ~1 ms per packet.
        assert_eq!(run(1500.0, 200), Usage::Over);
    }
}
