//! The rate controller: turns transport-cc feedback into one bitrate for a connection.
//! Delay overuse and heavy loss bring it down from what actually arrived; a quiet path
//! lets it grow (8 %/s, or additively near the last point of congestion), never far
//! above what the path has been shown to carry; a probe that arrived intact lifts it
//! to what the probe measured at once (this is what makes recovery take seconds, not
//! a minute of 8 % steps).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::delay::{DelayDetector, Usage};
use super::history::SendHistory;

pub const START_BITRATE: u64 = 1_000_000;
pub const MIN_BITRATE: u64 = 50_000;
pub const MAX_BITRATE: u64 = 30_000_000;

/// After a decrease, the next one waits this long: its effect takes a round trip to show.
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);
const DECREASE_FACTOR: f64 = 0.85;
const INCREASE_PER_SECOND: f64 = 1.08;
/// Near the rate of the last congestion, grow by about a packet per round trip.
const ADDITIVE_BPS_PER_SECOND: f64 = 80_000.0;
/// The estimate may run ahead of what was shown to arrive by this much, no more.
const ACKED_HEADROOM: f64 = 1.5;
const ACKED_SLACK_BPS: f64 = 10_000.0;
/// A cut is carried out when the subscriber's layers come down, which waits for their
/// keyframes. Until what is sent is within this factor of the estimate, loss and delay
/// are the old overload draining, and they do not cut again (for at most
/// [`COMPLIANCE_WAIT`]: a track with no lower layer may never comply).
const COMPLIANCE_SLACK: f64 = 1.15;
const COMPLIANCE_WAIT: Duration = Duration::from_secs(2);
/// Loss above this may be congestion (GCC: 10 %); below 2 % it is noise; between them
/// the estimate holds. All three are measured above the path's inherent loss.
const HIGH_LOSS: f64 = 0.10;
/// Loss is a congestion signal only this far above the path's inherent loss: random
/// loss (Wi-Fi, mobile) comes at any rate and no cut makes it go away.
const EXCESS_LOSS: f64 = 0.05;
/// Loss is read over this long (a feedback covers ~50 ms: a handful of packets, where
/// one random loss reads as 20 %).
const LOSS_WINDOW: Duration = Duration::from_millis(1000);
/// ... and says nothing until it covers this many packets.
const LOSS_MIN_PACKETS: u32 = 40;
/// How fast the inherent-loss estimate follows the loss seen while the delay detector
/// sees no queue (time constant; the loss it follows is already a second's average).
const INHERENT_LOSS_TAU: Duration = Duration::from_millis(250);
/// No path is taken to lose more than this by itself: loss beyond it is congestion even
/// with no queue to show for it (a policer drops what exceeds its rate at once).
const MAX_INHERENT_LOSS: f64 = 0.2;
/// Below this share of packets covered by feedback, what arrived is not scaled further.
const MIN_FEEDBACK_COVERAGE: f64 = 0.5;
/// Standard deviations of the windowed loss that excess loss must exceed.
const LOSS_SIGNIFICANCE: f64 = 2.5;
/// Inherent loss up to this much costs the allocation nothing (resends fit the budget's
/// share, and a frame of a few packets mostly arrives whole; a path at 5 % each way
/// reads 5-8 %)...
const LOSS_FREE: f64 = 0.08;
/// ...and each point above it takes this many points off what the room may spend, so
/// 15 % leaves 65 % (a layer down, as a rule), 20 % leaves 40 %, no less than
/// [`MIN_LOSS_HEADROOM`].
const LOSS_HEADROOM_SLOPE: f64 = 5.0;
/// The time constant of the inherent loss the allocation follows.
const SETTLED_LOSS_TAU: Duration = Duration::from_secs(2);
const MIN_LOSS_HEADROOM: f64 = 0.4;
const ACKED_WINDOW: Duration = Duration::from_millis(1000);
/// Arrivals spread this much wider than departures mean a queue is growing.
const QUEUE_STRETCH: f64 = 1.1;
/// Arrivals kept per probe (a 60 ms probe at tens of Mbit/s stays below this).
const MAX_PROBE_PACKETS: usize = 512;
/// A probe's second half that arrived this much more spread out than it left met a
/// queue (a shaper whose burst ran out): its rate is the link's.
const PROBE_QUEUE_STRETCH: f64 = 1.5;
/// A probe needs this many packets reported to say anything.
const PROBE_MIN_PACKETS: u32 = 5;

#[derive(Debug, Default, Clone)]
struct ProbeStats {
    id: u32,
    packets: u32,
    bytes: u64,
    first_size: u64,
    first_departure: Option<Instant>,
    last_departure: Option<Instant>,
    first_arrival: Option<Duration>,
    last_arrival: Option<Duration>,
    last_arrival_size: u64,
    /// (arrival, departure, bytes) of every packet, for the rate of the probe's second
    /// half.
    arrivals: Vec<(Duration, Instant, u64)>,
}

#[derive(Debug)]
pub struct Estimator {
    delay: DelayDetector,
    estimate: f64,
    last_change: Option<Instant>,
    last_decrease: Option<Instant>,
    /// What arrived when congestion last showed: the link's capacity, roughly.
    congestion_rate: Option<f64>,
    /// (arrival on the receiver's clock, departure, bytes), the last second of it.
    acked: VecDeque<(Duration, Instant, u64)>,
    acked_bytes: u64,
    probe: Option<ProbeStats>,
    /// The highest rate shown to get through since congestion last showed: what arrived,
    /// or what a probe measured. Layers are raised only within it (see `allocatable`).
    confirmed: f64,
    /// Loss over the last [`LOSS_WINDOW`].
    pub loss: f64,
    /// Packets the windowed `loss` was read from.
    loss_packets: u32,
    /// The loss this path has whatever is sent: followed while no queue builds.
    pub inherent_loss: f64,
    /// The inherent loss over seconds ([`SETTLED_LOSS_TAU`]): what the allocation
    /// follows, so a layer does not flap with each second's reading.
    pub settled_loss: f64,
    /// (when, packets reported, lost, skipped by lost feedback) per feedback, the last
    /// [`LOSS_WINDOW`] of them.
    loss_window: VecDeque<(Instant, u32, u32, u32)>,
    last_inherent_update: Option<Instant>,
    pub feedbacks: u64,
}

impl Default for Estimator {
    fn default() -> Self {
        Estimator::new(START_BITRATE)
    }
}

impl Estimator {
    pub fn new(start_bps: u64) -> Estimator {
        Estimator {
            delay: DelayDetector::default(),
            estimate: start_bps.clamp(MIN_BITRATE, MAX_BITRATE) as f64,
            last_change: None,
            last_decrease: None,
            congestion_rate: None,
            acked: VecDeque::new(),
            acked_bytes: 0,
            probe: None,
            confirmed: 0.0,
            loss: 0.0,
            inherent_loss: 0.0,
            settled_loss: 0.0,
            loss_window: VecDeque::new(),
            loss_packets: 0,
            last_inherent_update: None,
            feedbacks: 0,
        }
    }

    pub fn bitrate(&self) -> u64 {
        self.estimate as u64
    }

    /// Whether congestion has ever cut the estimate: until it has, nothing says the
    /// path cannot carry what is sent, and the room does not limit the subscriber.
    pub fn has_congested(&self) -> bool {
        self.last_decrease.is_some()
    }

    /// What the room may spend: the estimate, but no more than a little above what was
    /// shown to get through. GCC's own growth (8 %/s up to 1.5 x what arrived) is how it
    /// finds room for an encoder that adapts smoothly; a layer is a step of hundreds of
    /// kbit/s, and stepping up on a guess into a full link costs the subscriber loss and a
    /// keyframe. So layers rise on what arrived or what a probe measured.
    ///
    /// On a path that loses a lot by itself it leaves more aside ([`loss_headroom`]):
    /// every lost packet costs a resend, and a frame of many packets is more likely to lose
    /// one and wait a round trip for it; a layer down has fewer packets per frame.
    ///
    /// What arrived is read as what the path carries before its own loss: on a path that
    /// loses 15 % by itself, 85 % of what we send arrives, and capping the next
    /// allocation there would step the layers down every round for no congestion.
    pub fn allocatable(&self) -> u64 {
        let headroom = loss_headroom(self.settled_loss);
        (self.usable() * headroom).max(MIN_BITRATE as f64) as u64
    }

    /// [`Estimator::allocatable`] before the loss headroom: what the lowest layers may
    /// take (the headroom chooses smaller layers; it does not pause a video).
    pub fn allocatable_before_headroom(&self) -> u64 {
        self.usable().max(MIN_BITRATE as f64) as u64
    }

    /// The estimate, but no more than a little above what was shown to get through.
    fn usable(&self) -> f64 {
        let carried = self
            .acked_bitrate()
            .map_or(0.0, |a| self.before_own_loss(a));
        let shown = self.confirmed.max(carried);
        self.estimate.min(shown * 1.1)
    }

    /// What arrived (`acked_bps`) read as what the path carries before its own loss:
    /// on a path that loses 15 % by itself, 85 % of what we send arrives.
    fn before_own_loss(&self, acked_bps: f64) -> f64 {
        acked_bps / (1.0 - self.inherent_loss.min(MAX_INHERENT_LOSS))
    }

    /// Whether the room should spend no more than [`Estimator::allocatable`]: once
    /// congestion has shown, or while the path loses more than [`LOSS_FREE`] by itself
    /// (a layer down then has smaller frames, keyframes above all, that arrive whole
    /// more often). Otherwise every tile gets the layer its size asks for.
    pub fn limits_allocation(&self) -> bool {
        self.has_congested() || self.settled_loss > LOSS_FREE
    }

    /// When congestion last cut the estimate.
    pub fn last_decrease(&self) -> Option<Instant> {
        self.last_decrease
    }

    /// What the receiver saw arrive over the last second, in bits per second. Feedback
    /// lost on the way back hides packets that did arrive: the bytes reported are scaled
    /// up by the share of packets feedback covered (at 15 % loss each way, reading them
    /// as they came cut the allocation round after round down to the floor).
    pub fn acked_bitrate(&self) -> Option<f64> {
        let (first, last) = (self.acked.front()?.0, self.acked.back()?.0);
        let span = last.saturating_sub(first).max(Duration::from_millis(200));
        Some(self.acked_bytes as f64 * 8.0 / span.as_secs_f64() / self.feedback_coverage())
    }

    /// The share of sent packets that feedback covered over the last second (the rest
    /// were in feedback lost on the way back), at least [`MIN_FEEDBACK_COVERAGE`].
    fn feedback_coverage(&self) -> f64 {
        let (reported, skipped) = self
            .loss_window
            .iter()
            .fold((0u32, 0u32), |(r, k), w| (r + w.1, k + w.3));
        if reported < LOSS_MIN_PACKETS {
            return 1.0;
        }
        (reported as f64 / (reported + skipped) as f64).max(MIN_FEEDBACK_COVERAGE)
    }

    /// Whether the packets of the last second took clearly longer to arrive than to
    /// leave: a queue is filling somewhere. A delay trend without this is the receiver's
    /// (or our) scheduling jitter on a busy machine, not a link running full.
    fn queue_filling(&self) -> bool {
        let (Some(first), Some(last)) = (self.acked.front(), self.acked.back()) else {
            return false;
        };
        let arrival_span = last.0.saturating_sub(first.0);
        let departure_span = last.1.saturating_duration_since(first.1);
        arrival_span > departure_span.mul_f64(QUEUE_STRETCH) + Duration::from_millis(5)
    }

    /// One transport-cc feedback: `(transport seq, arrival)` per packet it covers, in
    /// order, `None` = lost. Returns the new estimate.
    pub fn on_feedback(
        &mut self,
        history: &mut SendHistory,
        acks: impl IntoIterator<Item = (u16, Option<Duration>)>,
        now: Instant,
    ) -> u64 {
        self.feedbacks += 1;
        let (mut reported, mut lost) = (0u32, 0u32);
        for (seq, arrival) in acks {
            let Some(sent) = history.report(seq) else {
                continue;
            };
            reported += 1;
            let Some(arrival) = arrival else {
                // Padding lost in a probe says the probe was too much, not that media
                // suffers; the probe's own result covers it.
                if sent.probe.is_none() {
                    lost += 1;
                }
                continue;
            };
            self.delay.packet(sent.departure, arrival);
            self.add_acked(arrival, sent.departure, sent.size as u64);
            if let Some(id) = sent.probe {
                self.probe_packet(id, sent.departure, arrival, sent.size as u64);
            }
        }
        let skipped = history.take_skipped();
        if reported == 0 {
            return self.bitrate();
        }
        let loss = self.windowed_loss(reported, lost, skipped, now);
        self.control(loss, history.sent_bitrate(now), now);
        tracing::trace!(
            reported,
            lost,
            acked = self.acked_bitrate().map(|a| a as u64),
            span_ms = self.acked.back().zip(self.acked.front()).map(|(b, f)| b.0.saturating_sub(f.0).as_millis() as u64),
            window = self.acked.len(),
            estimate = self.estimate as u64,
            sent = history.sent_bitrate(now),
            usage = ?self.delay.usage(),
            "bwe feedback"
        );
        self.bitrate()
    }

    /// Loss over the last second of feedback, once it covers enough packets to mean
    /// anything (until then, none).
    fn windowed_loss(&mut self, reported: u32, lost: u32, skipped: u32, now: Instant) -> f64 {
        self.loss_window.push_back((now, reported, lost, skipped));
        while self
            .loss_window
            .front()
            .is_some_and(|(t, ..)| now.saturating_duration_since(*t) > LOSS_WINDOW)
        {
            self.loss_window.pop_front();
        }
        let (reported, lost) = self
            .loss_window
            .iter()
            .fold((0, 0), |(r, l), (_, rr, ll, _)| (r + rr, l + ll));
        if reported >= LOSS_MIN_PACKETS {
            self.loss = lost as f64 / reported as f64;
            self.loss_packets = reported;
        }
        self.loss
    }

    /// How far above the inherent loss the windowed loss must be to mean congestion:
    /// [`EXCESS_LOSS`], or more where the window holds too few packets for that to stand
    /// out from chance. At 15 % random loss and 140 packets a second, one window in a
    /// few dozen reads 22 %; taken for congestion, each such read cut the estimate, the
    /// video paused, the windows got smaller and noisier, and the estimate hit the floor.
    fn significant_excess(&self) -> f64 {
        let n = f64::from(self.loss_packets.max(1));
        let sigma = (self.loss * (1.0 - self.loss) / n).sqrt();
        EXCESS_LOSS.max(LOSS_SIGNIFICANCE * sigma)
    }

    /// Follows the loss seen while nothing says a queue is building: that loss is the
    /// path's own (a radio link's), not caused by what we send.
    fn follow_inherent_loss(&mut self, loss: f64, now: Instant) {
        let dt = self
            .last_inherent_update
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.last_inherent_update = Some(now);
        let weight = (dt / INHERENT_LOSS_TAU.as_secs_f64()).min(1.0);
        self.inherent_loss += (loss.min(MAX_INHERENT_LOSS) - self.inherent_loss) * weight;
        let settle = (dt / SETTLED_LOSS_TAU.as_secs_f64()).min(1.0);
        self.settled_loss += (self.inherent_loss - self.settled_loss) * settle;
    }

    fn add_acked(&mut self, arrival: Duration, departure: Instant, bytes: u64) {
        self.acked.push_back((arrival, departure, bytes));
        self.acked_bytes += bytes;
        while let Some(&(t, _, b)) = self.acked.front() {
            if arrival.saturating_sub(t) <= ACKED_WINDOW && self.acked.len() <= 4096 {
                break;
            }
            self.acked.pop_front();
            self.acked_bytes -= b;
        }
    }

    fn control(&mut self, loss: f64, sent_bps: u64, now: Instant) {
        let acked = self.acked_bitrate();
        // Without this, each cut while the layers were still coming down cut again from
        // a lower arrival rate: a 600 kbit/s link was read as 100 kbit/s within 1.5 s.
        let complying = sent_bps as f64 <= self.estimate * COMPLIANCE_SLACK;
        let may_decrease = self.last_decrease.is_none_or(|t| {
            let since = now.saturating_duration_since(t);
            since >= DECREASE_INTERVAL && (complying || since >= COMPLIANCE_WAIT)
        });
        let queue_filling = self.queue_filling();
        let overuse = self.delay.usage() == Usage::Over && queue_filling;
        let queue_evident = queue_filling || self.delay.usage() != Usage::Normal;
        // Sending more than the estimate after congestion has shown: loss now is
        // presumably our own overload, whatever the delay says (a full drop-tail queue
        // has a steady delay).
        let overloading = !complying && self.has_congested();
        // Loss is congestion only well above what the path loses anyway. At 5 % random
        // loss each way a lossy participant's estimate used to fall from 1 Mbit/s to
        // ~100 kbit/s and its video stopped: random loss (Wi-Fi, mobile) comes at any
        // rate, and no cut makes it go away. What is lost while no queue builds and we
        // do not overload is taken as the path's own (up to [`MAX_INHERENT_LOSS`]); the
        // delay detector stays in charge of congestion.
        if queue_evident || overloading {
            self.last_inherent_update = Some(now);
        } else {
            self.follow_inherent_loss(loss, now);
        }
        let excess_loss = (loss - self.inherent_loss).max(0.0);
        let lossy = loss > HIGH_LOSS && excess_loss > self.significant_excess();
        let congested = overuse || lossy;
        if congested {
            if may_decrease {
                // From what arrived, not from the loss fraction: an SFU may keep sending
                // well above the estimate until the subscriber's new layers start on their
                // keyframes, and GCC's `(1 - loss/2)` applied round after round meanwhile
                // would drive the estimate to the floor, far below the link.
                // On a path that loses much by itself, loss alone while sending well
                // below the estimate (the loss headroom keeps the layers low) says the
                // estimate is too high, not by how much: what arrived is only what we
                // chose to send. Cut from there, a lossy Firefox subscriber's estimate
                // fell to its allocation at the first unlucky second and never came
                // back (15 % loss, tests/e2e/firefox-loss.test.mjs). On a cleaner path
                // what arrived is the better guess: a bottleneck's loss comes in bursts
                // while the low layer it carries leaves it part empty.
                let app_limited = self.settled_loss > LOSS_FREE
                    && (sent_bps as f64) * COMPLIANCE_SLACK < self.estimate;
                let from = if app_limited && !overuse {
                    self.estimate
                } else {
                    acked.unwrap_or(self.estimate).min(self.estimate)
                };
                tracing::debug!(
                    estimate = self.estimate as u64,
                    acked = acked.map(|a| a as u64),
                    loss,
                    overuse,
                    sent_bps,
                    "bwe cut"
                );
                self.estimate = from * DECREASE_FACTOR;
                self.confirmed = self.estimate;
                self.congestion_rate = acked;
                self.last_decrease = Some(now);
                self.last_change = Some(now);
            }
        } else if self.delay.usage() == Usage::Normal && excess_loss >= HIGH_LOSS / 5.0 {
            self.last_change = Some(now); // GCC: between 2 and 10 % loss, hold
        } else if self.delay.usage() == Usage::Normal {
            let elapsed = self.last_change.map_or(0.0, |t| {
                now.saturating_duration_since(t).as_secs_f64().min(1.0)
            });
            let near_capacity = self
                .congestion_rate
                .is_some_and(|c| self.estimate > 0.85 * c && self.estimate < 1.5 * c);
            let grown = if near_capacity {
                self.estimate + ADDITIVE_BPS_PER_SECOND * elapsed
            } else {
                self.estimate * INCREASE_PER_SECOND.powf(elapsed)
            };
            // What arrived, before the path's own loss: on a path that loses 20 %, the
            // ceiling taken from what arrived sat barely above what was sent.
            let carried = acked.map(|a| self.before_own_loss(a));
            let ceiling = carried.map_or(f64::MAX, |a| a * ACKED_HEADROOM + ACKED_SLACK_BPS);
            // Growing is capped by what arrived; an estimate already above the cap (a
            // probe's result, the start value) is kept, not cut.
            if grown > self.estimate {
                self.estimate = grown.min(ceiling.max(self.estimate));
            }
            // What arrived without congestion is proven: never estimate below it.
            if excess_loss < HIGH_LOSS / 5.0 {
                if let Some(acked) = acked {
                    self.estimate = self.estimate.max(acked);
                    self.confirmed = self.confirmed.max(acked);
                }
            }
            self.last_change = Some(now);
        } else {
            self.last_change = Some(now); // underuse: hold while the queue drains
        }
        self.estimate = self.estimate.clamp(MIN_BITRATE as f64, MAX_BITRATE as f64);
    }

    fn probe_packet(&mut self, id: u32, departure: Instant, arrival: Duration, size: u64) {
        let p = match self.probe.as_mut() {
            Some(p) if p.id == id => p,
            _ => self.probe.insert(ProbeStats {
                id,
                first_size: size,
                ..Default::default()
            }),
        };
        p.packets += 1;
        p.bytes += size;
        p.first_departure = Some(p.first_departure.map_or(departure, |d| d.min(departure)));
        p.last_departure = Some(p.last_departure.map_or(departure, |d| d.max(departure)));
        p.first_arrival = Some(p.first_arrival.map_or(arrival, |a| a.min(arrival)));
        if p.last_arrival.is_none_or(|a| arrival >= a) {
            p.last_arrival = Some(arrival);
            p.last_arrival_size = size;
        }
        if p.arrivals.len() < MAX_PROBE_PACKETS {
            p.arrivals.push((arrival, departure, size));
        }
    }

    /// The probe `id` is over (the engine stopped sending it and its feedback is in):
    /// what it measured, in bits per second, and the estimate after taking it in.
    pub fn finish_probe(&mut self, id: u32, now: Instant) -> Option<u64> {
        let p = self.probe.take().filter(|p| p.id == id)?;
        if p.packets < PROBE_MIN_PACKETS {
            return None;
        }
        let send_span = p
            .last_departure?
            .saturating_duration_since(p.first_departure?);
        let recv_span = p.last_arrival?.saturating_sub(p.first_arrival?);
        if send_span < Duration::from_millis(10) || recv_span < Duration::from_millis(10) {
            return None;
        }
        // Rates over the gaps between packets: the first packet's (send) and the last
        // one's (receive) bytes fall outside their spans.
        let send = (p.bytes - p.first_size) as f64 * 8.0 / send_span.as_secs_f64();
        let recv = (p.bytes - p.last_arrival_size) as f64 * 8.0 / recv_span.as_secs_f64();
        // A shaper's burst bucket lets a probe's first kilobytes through at full speed;
        // the second half arrives at the link's own rate, spread out against how it
        // left. Where it is not (it arrived as it left), its rate is the receiver's
        // scheduling noise on a few packets: on a busy machine it read half the probe's
        // rate, every probe, and a subscriber stayed a layer down for good after a limit
        // was lifted (tests/simulcast.rs, one run in forty).
        let mut arrivals = p.arrivals;
        arrivals.sort_unstable_by_key(|(t, ..)| *t);
        let half = &arrivals[arrivals.len() / 2..];
        let late = match (half.first(), half.last()) {
            (Some(first), Some(last)) if last.0 > first.0 + Duration::from_millis(5) => {
                let arrival_span = last.0 - first.0;
                let (earliest, latest) = half
                    .iter()
                    .fold((first.1, first.1), |(lo, hi), a| (lo.min(a.1), hi.max(a.1)));
                let departure_span = latest.saturating_duration_since(earliest);
                if arrival_span > departure_span.mul_f64(PROBE_QUEUE_STRETCH) {
                    let bytes: u64 = half[1..].iter().map(|(.., b)| b).sum();
                    bytes as f64 * 8.0 / arrival_span.as_secs_f64()
                } else {
                    recv
                }
            }
            _ => recv,
        };
        let measured = send.min(recv).min(late);
        tracing::debug!(
            packets = p.packets,
            send = send as u64,
            recv = recv as u64,
            late = late as u64,
            estimate = self.estimate as u64,
            confirmed = self.confirmed as u64,
            usage = ?self.delay.usage(),
            "bwe probe"
        );
        if self.delay.usage() != Usage::Over {
            self.confirmed = self.confirmed.max(measured);
        }
        if self.delay.usage() != Usage::Over && measured > self.estimate {
            self.estimate = (0.95 * measured).clamp(MIN_BITRATE as f64, MAX_BITRATE as f64);
            self.congestion_rate = None;
            self.last_change = Some(now);
        }
        Some(measured as u64)
    }
}

/// The share of the estimate the room may spend on a path with `inherent_loss`.
pub fn loss_headroom(inherent_loss: f64) -> f64 {
    (1.0 - LOSS_HEADROOM_SLOPE * (inherent_loss - LOSS_FREE).max(0.0)).max(MIN_LOSS_HEADROOM)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated path: packets of `size` sent every `gap`, through a bottleneck of
    /// `capacity_bps` with a queue of `queue_ms`, feedback every 100 ms.
    struct Path {
        t0: Instant,
        history: SendHistory,
        estimator: Estimator,
        link_free_ms: f64,
        pending: Vec<(u16, Option<Duration>)>,
        now_ms: f64,
        /// Report every packet of the last 500 ms in each feedback, as libwebrtc does
        /// after a retransmission with an old transport-wide number rewinds it.
        rereport: bool,
        sent: VecDeque<(f64, u16, Option<Duration>)>,
        /// Each packet is lost at random with this chance, before the bottleneck (a
        /// radio link's loss, not congestion).
        random_loss: f64,
        rng: rand::rngs::StdRng,
        /// The bottleneck's queue; 0 is a policer, dropping what exceeds the rate.
        queue_limit_ms: f64,
    }

    impl Path {
        fn new(start: u64) -> Path {
            Path {
                t0: Instant::now(),
                history: SendHistory::default(),
                estimator: Estimator::new(start),
                link_free_ms: 0.0,
                pending: Vec::new(),
                now_ms: 0.0,
                rereport: false,
                sent: VecDeque::new(),
                random_loss: 0.0,
                rng: rand::SeedableRng::seed_from_u64(7),
                queue_limit_ms: 200.0,
            }
        }

        /// Sends at `send_bps` for `secs` over a link of `capacity_bps`.
        fn run(&mut self, send_bps: f64, capacity_bps: f64, secs: f64, probe: Option<u32>) {
            let size = 1000.0;
            let gap_ms = size * 8.0 / send_bps * 1000.0;
            let end = self.now_ms + secs * 1000.0;
            let mut next_feedback = self.now_ms + 100.0;
            while self.now_ms < end {
                let now = self.t0 + Duration::from_micros((self.now_ms * 1000.0) as u64);
                let seq = self.history.record(size as usize, probe, now);
                let start = self.link_free_ms.max(self.now_ms);
                let queue_ms = start - self.now_ms;
                let randomly_lost = rand::Rng::random_bool(&mut self.rng, self.random_loss);
                let arrival = if randomly_lost || queue_ms > self.queue_limit_ms {
                    None // lost at random, or a tail drop
                } else {
                    self.link_free_ms = start + size * 8.0 / capacity_bps * 1000.0;
                    Some(Duration::from_micros(
                        ((self.link_free_ms + 10.0) * 1000.0) as u64,
                    ))
                };
                self.pending.push((seq, arrival));
                self.sent.push_back((self.now_ms, seq, arrival));
                while self.sent.front().is_some_and(|s| s.0 < self.now_ms - 500.0) {
                    self.sent.pop_front();
                }
                self.now_ms += gap_ms;
                if self.now_ms >= next_feedback {
                    let now = self.t0 + Duration::from_micros((self.now_ms * 1000.0) as u64);
                    let mut acks = std::mem::take(&mut self.pending);
                    if self.rereport {
                        acks = self.sent.iter().map(|&(_, seq, a)| (seq, a)).collect();
                    }
                    self.estimator.on_feedback(&mut self.history, acks, now);
                    next_feedback += 100.0;
                }
            }
        }

        fn now(&self) -> Instant {
            self.t0 + Duration::from_micros((self.now_ms * 1000.0) as u64)
        }
    }

    /// A token-bucket shaper (tc tbf): `rate_bps`, a bucket of `burst` bytes, and a queue
    /// that drops what would wait longer than `latency_ms`.
    struct Tbf {
        rate_bps: f64,
        burst: f64,
        latency_ms: f64,
        tokens: f64,
        at_ms: f64,
    }

    impl Tbf {
        fn new(rate_bps: f64) -> Tbf {
            Tbf {
                rate_bps,
                burst: 4000.0,
                latency_ms: 200.0,
                tokens: 4000.0,
                at_ms: 0.0,
            }
        }

        /// When a packet of `size` bytes handed over at `now_ms` arrives, or `None`.
        fn send(&mut self, size: f64, now_ms: f64) -> Option<f64> {
            let per_ms = self.rate_bps / 8000.0;
            self.tokens = (self.tokens + (now_ms - self.at_ms) * per_ms).min(self.burst);
            self.at_ms = now_ms;
            let wait_ms = (size - self.tokens).max(0.0) / per_ms;
            if wait_ms > self.latency_ms {
                return None;
            }
            self.tokens -= size;
            Some(now_ms + wait_ms + 5.0)
        }
    }

    /// A subscriber of two simulcast videos (q/h/f at 150k/500k/1M each) and two audio
    /// tracks behind a tbf-shaped downlink: frames leave in bursts, as an SFU forwards
    /// them, and a layer changes only `switch_lag_ms` after it is chosen (its keyframe).
    /// Returns the estimate once a second.
    fn simulcast_behind_tbf(link_bps: f64, secs: u64, switch_lag_ms: f64) -> Vec<u64> {
        const LAYERS: [f64; 3] = [150_000.0, 500_000.0, 1_000_000.0];
        let t0 = Instant::now();
        let at = |ms: f64| t0 + Duration::from_micros((ms * 1000.0) as u64);
        let mut history = SendHistory::default();
        let mut e = Estimator::new(1_000_000);
        let mut tbf = Tbf::new(link_bps);
        let mut pending: VecDeque<(u16, Option<f64>)> = VecDeque::new();
        let (mut layer, mut chosen, mut chosen_at) = (2usize, 2usize, 0.0);
        let mut out = Vec::new();
        let send = |history: &mut SendHistory,
                    tbf: &mut Tbf,
                    pending: &mut VecDeque<(u16, Option<f64>)>,
                    size: f64,
                    ms: f64| {
            let seq = history.record(size as usize, None, at(ms));
            pending.push_back((seq, tbf.send(size, ms)));
        };
        for ms in 0..secs * 1000 {
            let ms = ms as f64;
            if (ms as u64).is_multiple_of(20) {
                for _ in 0..2 {
                    send(&mut history, &mut tbf, &mut pending, 125.0, ms); // audio, 50 kbit/s each
                }
            }
            if (ms as u64).is_multiple_of(50) {
                for _ in 0..2 {
                    let mut frame = LAYERS[layer] / 8.0 / 20.0;
                    while frame > 0.0 {
                        send(&mut history, &mut tbf, &mut pending, frame.min(1000.0), ms);
                        frame -= 1000.0;
                    }
                }
            }
            if (ms as u64).is_multiple_of(60) {
                // Feedback: everything up to the last packet that has arrived.
                let now = at(ms);
                let last = pending
                    .iter()
                    .rposition(|(_, a)| a.is_some_and(|a| a <= ms));
                if let Some(last) = last {
                    let acks: Vec<(u16, Option<Duration>)> = pending
                        .drain(..=last)
                        .map(|(seq, a)| {
                            (seq, a.map(|a| Duration::from_micros((a * 1000.0) as u64)))
                        })
                        .collect();
                    e.on_feedback(&mut history, acks, now);
                }
            }
            if (ms as u64).is_multiple_of(250) {
                // The allocator: 90 % of what may be spent, audio first.
                let budget = if e.has_congested() {
                    e.allocatable() as f64 * 0.9
                } else {
                    f64::MAX
                };
                let best = (0..LAYERS.len())
                    .rev()
                    .find(|&l| 2.0 * LAYERS[l] + 100_000.0 <= budget)
                    .unwrap_or(0);
                if best != chosen {
                    (chosen, chosen_at) = (best, ms);
                }
            }
            if layer != chosen && ms - chosen_at >= switch_lag_ms {
                layer = chosen;
            }
            if (ms as u64) % 1000 == 999 {
                out.push(e.bitrate());
            }
        }
        out
    }

    #[test]
    fn layers_that_come_down_late_do_not_drive_the_estimate_below_the_link() {
        // 600 kbit/s carries both 'q' layers and audio (400k), not 'h' (1.1M). While the
        // 'f' layers still flow after the first cut, loss goes on: that must not cut
        // the estimate again and again down to the floor.
        let estimates = simulcast_behind_tbf(600_000.0, 20, 500.0);
        let settled = &estimates[3..];
        assert!(
            settled.iter().all(|&e| (350_000..900_000).contains(&e)),
            "the estimate once a second: {estimates:?}"
        );
    }

    #[test]
    fn a_burst_bucket_does_not_inflate_a_probe() {
        // A 60 ms probe at 1.2 Mbit/s (30 padding packets of 300 bytes) into a 300 kbit/s
        // link whose shaper lets 4 KB through at once: it must measure about the link.
        let t0 = Instant::now();
        let mut history = SendHistory::default();
        let mut e = Estimator::new(300_000);
        let mut acks = Vec::new();
        let (mut bucket, mut link_free_ms) = (4_000.0f64, 0.0f64);
        for i in 0..30u64 {
            let sent_ms = i as f64 * 2.0;
            let now = t0 + Duration::from_micros((sent_ms * 1000.0) as u64);
            let seq = history.record(300, Some(9), now);
            let arrival_ms = if bucket >= 300.0 {
                bucket -= 300.0;
                sent_ms + 10.0
            } else {
                link_free_ms = link_free_ms.max(sent_ms) + 300.0 * 8.0 / 300.0;
                link_free_ms + 10.0
            };
            acks.push((
                seq,
                Some(Duration::from_micros((arrival_ms * 1000.0) as u64)),
            ));
        }
        e.on_feedback(&mut history, acks, t0 + Duration::from_secs(1));
        let measured = e
            .finish_probe(9, t0 + Duration::from_secs(1))
            .expect("a result");
        assert!(
            measured < 400_000,
            "the link (300k), not the burst: {measured}"
        );
    }

    #[test]
    fn a_probe_sent_in_ticks_is_not_read_down_by_its_own_bursts() {
        // Padding leaves on the 20 ms housekeeping tick, in bursts (10, 10, 10 and 1
        // packets of 300 bytes at 0, 20, 40 and 60 ms) over a link that carries them all,
        // stamped by a receiver a little late at random. The second half of the probe
        // spans two gaps between bursts for half the bytes: read as the link's rate, it
        // said ~0.9 of what was sent, every probe, and the estimate never rose.
        let t0 = Instant::now();
        let mut rng: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(7);
        for round in 0..20u32 {
            let mut history = SendHistory::default();
            let mut e = Estimator::new(600_000);
            let mut acks = Vec::new();
            for (tick, burst) in [10u64, 10, 10, 1].into_iter().enumerate() {
                for i in 0..burst {
                    let sent_ms = tick as f64 * 20.0 + i as f64 * 0.1;
                    let now = t0 + Duration::from_micros((sent_ms * 1000.0) as u64);
                    let seq = history.record(300, Some(round), now);
                    let arrival_ms = sent_ms + 10.0 + rand::Rng::random_range(&mut rng, 0.0..2.0);
                    acks.push((
                        seq,
                        Some(Duration::from_micros((arrival_ms * 1000.0) as u64)),
                    ));
                }
            }
            e.on_feedback(&mut history, acks, t0 + Duration::from_secs(1));
            let measured = e
                .finish_probe(round, t0 + Duration::from_secs(1))
                .expect("a result");
            assert!(
                measured > 1_000_000,
                "round {round}: measured {measured} of ~1.2M"
            );
        }
    }

    #[test]
    fn hostile_feedback_never_panics_and_stays_in_bounds() {
        let t0 = Instant::now();
        let mut history = SendHistory::default();
        let mut e = Estimator::default();
        let mut rng = rand::rng();
        for round in 0..2_000u64 {
            let now = t0 + Duration::from_millis(round * 10);
            for _ in 0..5 {
                history.record(1200, None, now);
            }
            // Feedback naming any sequence numbers, with any arrival times, or lost.
            let acks: Vec<(u16, Option<Duration>)> = (0..rand::Rng::random_range(&mut rng, 0..40))
                .map(|_| {
                    let seq = rand::Rng::random(&mut rng);
                    let arrival = rand::Rng::random_bool(&mut rng, 0.8)
                        .then(|| Duration::from_micros(rand::Rng::random::<u32>(&mut rng) as u64));
                    (seq, arrival)
                })
                .collect();
            let bps = e.on_feedback(&mut history, acks, now);
            assert!((MIN_BITRATE..=MAX_BITRATE).contains(&bps), "{bps}");
            let _ = e.finish_probe(round as u32, now);
        }
    }

    #[test]
    fn arrival_jitter_on_a_wide_link_is_not_congestion() {
        // A busy receiver stamps arrivals late; the link itself carries everything. The
        // estimate must not be cut.
        let t0 = Instant::now();
        let mut history = SendHistory::default();
        let mut e = Estimator::new(1_000_000);
        let mut rng = rand::rng();
        let mut pending = Vec::new();
        for i in 0..3000u64 {
            let sent_ms = i as f64 * 8.0; // 1000 bytes every 8 ms: 1 Mbit/s
            let now = t0 + Duration::from_micros((sent_ms * 1000.0) as u64);
            let seq = history.record(1000, None, now);
            // Random jitter, and every 300 ms the receiver stalls for 60 ms and then
            // stamps what waited all at once (a busy machine's scheduler).
            let jitter = rand::Rng::random_range(&mut rng, 0.0..5.0);
            let mut arrival_ms = sent_ms + 10.0 + jitter;
            let phase = arrival_ms % 300.0;
            if phase < 60.0 {
                arrival_ms += 60.0 - phase;
            }
            pending.push((
                seq,
                Some(Duration::from_micros((arrival_ms * 1000.0) as u64)),
            ));
            if i % 12 == 11 {
                e.on_feedback(&mut history, std::mem::take(&mut pending), now);
            }
        }
        assert!(
            !e.has_congested(),
            "jitter alone cut the estimate to {}",
            e.bitrate()
        );
        assert!(e.bitrate() >= 1_000_000);
    }

    #[test]
    fn sending_into_a_narrow_link_brings_the_estimate_under_it() {
        let mut p = Path::new(2_000_000);
        p.run(2_000_000.0, 300_000.0, 5.0, None);
        let est = p.estimator.bitrate();
        assert!(
            est < 300_000,
            "estimate {est} should fall below the 300 kbit/s link"
        );
        assert!(est >= MIN_BITRATE);
    }

    /// Random loss on a wide path (Wi-Fi) is not congestion: the estimate holds at what
    /// is sent. GCC's 10 % rule alone, read per feedback, cut it to the floor.
    #[test]
    fn random_loss_on_a_wide_link_does_not_cut_the_estimate() {
        for loss in [0.05, 0.10, 0.15] {
            let mut p = Path::new(1_500_000);
            p.random_loss = loss;
            p.run(1_200_000.0, 10_000_000.0, 20.0, None);
            let est = p.estimator.bitrate();
            assert!(
                est >= 1_000_000,
                "{loss} random loss: estimate {est} fell below what is sent (1.2M)"
            );
            assert!(
                (p.estimator.inherent_loss - loss).abs() < 0.04,
                "inherent loss {} read for {loss}",
                p.estimator.inherent_loss
            );
        }
    }

    /// A subscriber sent far less than its estimate (a lossy path's headroom keeps its
    /// layers low) and its loss reads above the path's own for a second: a cut goes from
    /// the estimate, not from what arrived. Cut from what arrived (only what we chose to
    /// send), the estimate fell to the allocation's level at the first unlucky second;
    /// the loss headroom then paused the video and what arrived fell further
    /// (Firefox at 15 % loss, tests/e2e/firefox-loss.test.mjs).
    #[test]
    fn a_loss_burst_while_sending_below_the_estimate_does_not_cut_it_to_what_was_sent() {
        let mut p = Path::new(3_000_000);
        p.random_loss = 0.15;
        p.run(640_000.0, 10_000_000.0, 10.0, None);
        p.random_loss = 0.5;
        p.run(640_000.0, 10_000_000.0, 1.0, None);
        assert!(
            p.estimator.has_congested(),
            "the burst is read as congestion (else this test shows nothing)"
        );
        p.random_loss = 0.15;
        p.run(640_000.0, 10_000_000.0, 20.0, None);
        let est = p.estimator.bitrate();
        assert!(
            est >= 1_200_000,
            "a second of heavy loss cut the estimate to {est} (640k sent, 3M before)"
        );
        assert!(
            p.estimator.allocatable_before_headroom() >= 640_000,
            "what the lowest layers may take: {}",
            p.estimator.allocatable_before_headroom()
        );
    }

    /// ... while a narrow link on top of random loss still brings it under the link.
    #[test]
    fn congestion_is_still_found_under_random_loss() {
        let mut p = Path::new(2_000_000);
        p.random_loss = 0.05;
        p.run(2_000_000.0, 300_000.0, 5.0, None);
        let est = p.estimator.bitrate();
        assert!(est < 300_000, "estimate {est} under a 300 kbit/s link");
    }

    /// A policer has no queue to show in the delay: heavy loss alone says congestion.
    #[test]
    fn a_policer_without_a_queue_is_congestion() {
        let mut p = Path::new(1_500_000);
        p.queue_limit_ms = 0.0;
        p.run(1_200_000.0, 350_000.0, 5.0, None);
        let est = p.estimator.bitrate();
        assert!(est < 400_000, "estimate {est} behind a 350 kbit/s policer");
    }

    /// When the loss stops, nothing holds the estimate down.
    #[test]
    fn the_estimate_grows_again_once_random_loss_stops() {
        let mut p = Path::new(500_000);
        p.random_loss = 0.15;
        p.run(500_000.0, 10_000_000.0, 10.0, None);
        let lossy = p.estimator.bitrate();
        p.random_loss = 0.0;
        p.run(500_000.0, 10_000_000.0, 5.0, None);
        assert!(
            p.estimator.inherent_loss < 0.02,
            "{}",
            p.estimator.inherent_loss
        );
        assert!(p.estimator.bitrate() >= lossy);
    }

    #[test]
    fn packets_reported_again_are_not_counted_again() {
        let mut p = Path::new(2_000_000);
        p.rereport = true;
        p.run(1_500_000.0, 600_000.0, 5.0, None);
        let acked = p.estimator.acked_bitrate().unwrap_or(0.0);
        assert!(
            acked < 700_000.0,
            "what arrived is the link (600k): {acked}"
        );
        assert!(p.estimator.bitrate() < 600_000, "{}", p.estimator.bitrate());
        assert!(p.estimator.allocatable() < 600_000);
    }

    #[test]
    fn a_wide_link_lets_the_estimate_grow_only_as_far_as_traffic_shows() {
        let mut p = Path::new(500_000);
        p.run(400_000.0, 10_000_000.0, 10.0, None);
        let est = p.estimator.bitrate();
        assert!(est > 500_000, "grows on a quiet path: {est}");
        assert!(
            est <= 800_000,
            "but not far beyond what was sent (400k): {est}"
        );
    }

    #[test]
    fn a_probe_that_arrives_intact_lifts_the_estimate_at_once() {
        let mut p = Path::new(300_000);
        p.run(250_000.0, 10_000_000.0, 2.0, None);
        let before = p.estimator.bitrate();
        p.run(2_000_000.0, 10_000_000.0, 0.2, Some(7));
        p.run(250_000.0, 10_000_000.0, 0.2, None); // the probe's feedback comes in
        let now = p.now();
        let measured = p.estimator.finish_probe(7, now).expect("a result");
        assert!(
            (1_700_000..2_300_000).contains(&measured),
            "measured {measured}"
        );
        assert!(
            p.estimator.bitrate() > 3 * before,
            "{before} -> {}",
            p.estimator.bitrate()
        );
    }

    #[test]
    fn a_probe_through_a_narrow_link_measures_the_link() {
        let mut p = Path::new(300_000);
        p.run(200_000.0, 600_000.0, 2.0, None);
        p.run(2_000_000.0, 600_000.0, 0.2, Some(1));
        p.run(100_000.0, 600_000.0, 1.0, None);
        let now = p.now();
        let measured = p.estimator.finish_probe(1, now).expect("a result");
        assert!(
            measured < 800_000,
            "the link, not the send rate: {measured}"
        );
        assert!(p.estimator.bitrate() < 800_000);
    }

    #[test]
    fn a_lossy_path_leaves_headroom_below_the_estimate() {
        assert_eq!(loss_headroom(0.0), 1.0);
        assert_eq!(loss_headroom(0.08), 1.0);
        assert!((loss_headroom(0.15) - 0.65).abs() < 1e-9);
        assert_eq!(loss_headroom(0.5), MIN_LOSS_HEADROOM);
        let mut e = Estimator::new(1_000_000);
        e.confirmed = 1_000_000.0;
        let clean = e.allocatable();
        e.settled_loss = 0.15;
        assert_eq!(e.allocatable(), (clean as f64 * 0.65) as u64);
        assert!(
            e.limits_allocation(),
            "a path this lossy is limited without congestion"
        );
    }
}
