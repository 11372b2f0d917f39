//! The interceptor that keeps NACK retransmissions from flooding a congested downlink.
//!
//! rtc's NACK responder resends a packet on every NACK that names it. A browser NACKs a
//! lost packet again after its round-trip time, and the round trip it knows is its own
//! uplink's (a few milliseconds here), not the downlink's queue (up to hundreds): so on
//! a full link each lost packet was resent up to ten times, the resends filled the
//! queue, and they were lost in turn. Measured behind a 600 kbit/s token bucket: a
//! fifth of all packets dropped while the link carried 375 kbit/s on average. Here a
//! packet is resent at most once per [`RETRANSMIT_SPACING`] (libwebrtc and mediasoup
//! space resends by the round trip in the same way).
//!
//! Resends also share a budget: a tenth of the connection's downlink estimate
//! ([`RETRANSMIT_SHARE`]; libwebrtc caps them at the estimate, but it paces them with
//! the media, and an SFU forwards media as it comes). The shard sets it from its
//! estimator through [`RetransmitLimits`].
//!
//! A resend also leaves without its transport-wide sequence number: rtc resends the
//! packet as it was, number included, and libwebrtc answers a number it has already
//! reported by reporting the last half second again in every feedback.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use super::extensions::TRANSPORT_CC_URI;
use crate::metrics::Metrics;

/// A packet is resent at most once in this long...
pub const RETRANSMIT_SPACING: Duration = Duration::from_millis(100);
/// ... or this long on a path that loses [`LOSSY_PATH`] or more by itself (and no queue
/// builds: the estimator follows inherent loss only then). A browser NACKs a packet
/// every 20 ms, ten times at most, and gives up after 200 ms: with one resend per
/// 100 ms, a lost resend was lost for good about once in seven at 15 % loss, and the
/// picture froze until a keyframe (tests/e2e/loss.test.mjs: 20 PLIs from the lossy page
/// in 15 s).
pub const LOSSY_PATH_RETRANSMIT_SPACING: Duration = Duration::from_millis(30);
/// The inherent loss above which resends are spaced by [`LOSSY_PATH_RETRANSMIT_SPACING`].
pub const LOSSY_PATH: f64 = 0.03;
/// Resends remembered before old ones are forgotten (a second of a busy downlink's).
const REMEMBERED: usize = 2048;
/// The part of the downlink estimate resends may use.
pub const RETRANSMIT_SHARE: f64 = 0.1;
/// ... at most, however lossy the path.
const MAX_SHARE: f64 = 0.6;
/// The budget's bucket holds this much of it (a burst of resends after one loss).
const BUDGET_BURST: Duration = Duration::from_millis(200);
/// ... and never less than a few full packets.
const MIN_BURST_BYTES: f64 = 3_600.0;

/// What one connection's resends may use, in bits per second, and how far apart one
/// packet's resends must be: written by the shard as its estimate changes, read by the
/// connection's [`RetransmissionLimiter`].
#[derive(Clone, Debug)]
pub struct RetransmitLimits(Arc<LimitCells>);

#[derive(Debug)]
struct LimitCells {
    bits_per_second: AtomicU64,
    lossy_path: std::sync::atomic::AtomicBool,
}

impl Default for RetransmitLimits {
    /// No limit until there is an estimate.
    fn default() -> Self {
        RetransmitLimits(Arc::new(LimitCells {
            bits_per_second: AtomicU64::new(u64::MAX),
            lossy_path: Default::default(),
        }))
    }
}

impl RetransmitLimits {
    /// A tenth of the estimate, plus twice the path's inherent loss: a lossy but
    /// uncongested link (Wi-Fi at 15 %) needs that much resent, and a bare tenth starved
    /// its recovery into frozen video. Such a link also gets its resends sooner
    /// ([`LOSSY_PATH_RETRANSMIT_SPACING`]).
    pub fn set_from_estimate(&self, estimate_bps: u64, inherent_loss: f64) {
        let share = (RETRANSMIT_SHARE + 2.0 * inherent_loss.clamp(0.0, 1.0)).min(MAX_SHARE);
        self.0
            .bits_per_second
            .store((estimate_bps as f64 * share) as u64, Relaxed);
        self.0
            .lossy_path
            .store(inherent_loss >= LOSSY_PATH, Relaxed);
    }

    fn bits_per_second(&self) -> u64 {
        self.0.bits_per_second.load(Relaxed)
    }

    fn spacing(&self) -> Duration {
        if self.0.lossy_path.load(Relaxed) {
            LOSSY_PATH_RETRANSMIT_SPACING
        } else {
            RETRANSMIT_SPACING
        }
    }
}

pub struct RetransmissionLimiter {
    /// (SSRC, sequence number) -> when it was last resent.
    resent: HashMap<(u32, u16), Instant>,
    /// The transport-cc extension id per local SSRC.
    twcc_ids: HashMap<u32, u8>,
    metrics: Arc<Metrics>,
    limits: RetransmitLimits,
    /// Bytes the budget allows now, and when it was last topped up.
    tokens: f64,
    topped_up: Option<Instant>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RetransmissionLimiter {
    pub fn new(metrics: Arc<Metrics>, limits: RetransmitLimits) -> RetransmissionLimiter {
        RetransmissionLimiter {
            resent: HashMap::new(),
            twcc_ids: HashMap::new(),
            metrics,
            limits,
            tokens: MIN_BURST_BYTES,
            topped_up: None,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// Whether a resend of `(ssrc, seq)`, `size` bytes, may leave at `now` (and
    /// charges it if so).
    fn allow(&mut self, ssrc: u32, seq: u16, size: usize, now: Instant) -> bool {
        let spacing = self.limits.spacing();
        if let Some(&last) = self.resent.get(&(ssrc, seq)) {
            if now.saturating_duration_since(last) < spacing {
                return false;
            }
        }
        let bps = self.limits.bits_per_second();
        if bps != u64::MAX {
            let per_second = bps as f64 / 8.0;
            let burst = (per_second * BUDGET_BURST.as_secs_f64()).max(MIN_BURST_BYTES);
            let elapsed = self
                .topped_up
                .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
            self.tokens = (self.tokens + elapsed * per_second).min(burst);
            self.topped_up = Some(now);
            if self.tokens < size as f64 {
                Metrics::inc(&self.metrics.retransmissions_over_budget);
                return false;
            }
            self.tokens -= size as f64;
        }
        if self.resent.len() >= REMEMBERED {
            self.resent
                .retain(|_, t| now.saturating_duration_since(*t) < spacing);
        }
        self.resent.insert((ssrc, seq), now);
        true
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RetransmissionLimiter {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if msg.message.has(&Attribute::Retransmission) {
            if let Packet::Rtp(packet) = &mut msg.message.packet {
                let (ssrc, seq) = (packet.header.ssrc, packet.header.sequence_number);
                let size = packet.header.marshal_size() + packet.payload.len();
                if !self.allow(ssrc, seq, size, msg.now) {
                    Metrics::inc(&self.metrics.retransmissions_suppressed);
                    return Ok(());
                }
                Metrics::inc(&self.metrics.retransmissions_out);
                if let Some(&id) = self.twcc_ids.get(&ssrc) {
                    let h = &mut packet.header;
                    h.extensions.retain(|e| e.id != id);
                    h.extension = !h.extensions.is_empty();
                }
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RetransmissionLimiter {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(ext) = info
            .rtp_header_extensions
            .iter()
            .find(|e| e.uri == TRANSPORT_CC_URI)
        {
            if let Ok(id) = u8::try_from(ext.id) {
                self.twcc_ids.insert(info.ssrc, id);
            }
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.twcc_ids.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtp::header::{Extension, Header};
    use rtc::shared::TransportContext;

    fn resend(seq: u16, now: Instant) -> TaggedPacket {
        let header = Header {
            version: 2,
            ssrc: 7,
            sequence_number: seq,
            extension: true,
            extension_profile: 0xBEDE,
            extensions: vec![
                Extension {
                    id: 3,
                    payload: bytes::Bytes::from_static(&[0, 42]),
                },
                Extension {
                    id: 4,
                    payload: bytes::Bytes::from_static(&[1]),
                },
            ],
            ..Default::default()
        };
        let packet = rtc::rtp::Packet {
            header,
            payload: bytes::Bytes::from_static(&[1, 2, 3]),
        };
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)).with(Attribute::Retransmission),
        }
    }

    fn limiter() -> RetransmissionLimiter {
        let mut l = RetransmissionLimiter::new(Arc::default(), RetransmitLimits::default());
        l.bind_local_stream(&StreamInfo {
            ssrc: 7,
            rtp_header_extensions: vec![rtc::interceptor::RTPHeaderExtension {
                uri: TRANSPORT_CC_URI.into(),
                id: 3,
            }],
            ..Default::default()
        });
        l
    }

    #[test]
    fn a_packet_is_resent_once_per_spacing() {
        let t0 = Instant::now();
        let mut l = limiter();
        for ms in [0, 5, 20, 99] {
            l.handle_write(resend(1, t0 + Duration::from_millis(ms)))
                .unwrap();
        }
        l.handle_write(resend(2, t0 + Duration::from_millis(5)))
            .unwrap();
        l.handle_write(resend(1, t0 + Duration::from_millis(100)))
            .unwrap();
        let out: Vec<u16> = std::iter::from_fn(|| l.poll_write())
            .map(|m| match m.message.packet {
                Packet::Rtp(p) => p.header.sequence_number,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(out, [1, 2, 1]);
        let m = l.metrics.snapshot();
        assert_eq!(
            (m.retransmissions_out, m.retransmissions_suppressed),
            (3, 3)
        );
    }

    #[test]
    fn on_a_lossy_path_a_packet_is_resent_sooner() {
        let t0 = Instant::now();
        let mut l = limiter();
        l.limits.set_from_estimate(2_000_000, 0.15);
        // A browser's NACKs for one packet, every 20 ms until it gives up (200 ms).
        for ms in (0..200).step_by(20) {
            l.handle_write(resend(1, t0 + Duration::from_millis(ms)))
                .unwrap();
        }
        let sent = std::iter::from_fn(|| l.poll_write()).count();
        assert_eq!(sent, 5, "at 0, 40, 80, 120 and 160 ms");
        // A clean (or congested) path keeps the wider spacing.
        l.limits.set_from_estimate(2_000_000, 0.0);
        for ms in (0..200).step_by(20) {
            l.handle_write(resend(2, t0 + Duration::from_millis(ms)))
                .unwrap();
        }
        assert_eq!(std::iter::from_fn(|| l.poll_write()).count(), 2);
        let m = l.metrics.snapshot();
        assert_eq!(m.retransmissions_over_budget, 0);
    }

    #[test]
    fn a_resend_leaves_without_its_transport_wide_number() {
        let mut l = limiter();
        l.handle_write(resend(1, Instant::now())).unwrap();
        let Packet::Rtp(p) = l.poll_write().unwrap().message.packet else {
            unreachable!()
        };
        let ids: Vec<u8> = p.header.extensions.iter().map(|e| e.id).collect();
        assert_eq!(ids, [4], "the other extensions stay");
        assert!(p.header.extension);
    }

    #[test]
    fn resends_stay_within_a_tenth_of_the_estimate() {
        let t0 = Instant::now();
        let mut l = limiter();
        l.limits.set_from_estimate(600_000, 0.0); // 60 kbit/s: 7.5 kB/s
        for i in 0..1000u16 {
            // A NACK storm: a different packet every millisecond for a second.
            l.handle_write(resend(i, t0 + Duration::from_millis(i as u64)))
                .unwrap();
        }
        let bytes: usize = std::iter::from_fn(|| l.poll_write())
            .map(|m| match m.message.packet {
                Packet::Rtp(p) => p.header.marshal_size() + p.payload.len(),
                _ => 0,
            })
            .sum();
        assert!(
            (7_000..=7_500 + 3_600).contains(&bytes),
            "a second's budget plus the first burst: {bytes}"
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let t0 = Instant::now();
        let mut l = limiter();
        for i in 0..20_000u32 {
            let now = t0 + Duration::from_millis(i as u64);
            l.handle_write(resend(i as u16, now)).unwrap();
            let _ = l.poll_write();
        }
        assert!(l.resent.len() <= REMEMBERED);
    }
}
