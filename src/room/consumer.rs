//! One (subscriber, producer) leg: gates video on a keyframe, rewrites headers, counts.

use std::time::Instant;

use super::codec::Vp8Numbering;
use super::picture_numbering::{PictureNumbering, PicturesSent};
use super::rewrite::{ExtMap, RewrittenHeader, SeqTsRewriter};
use crate::id::{LegId, ParticipantId, TrackId};

/// Why a packet offered to a leg did not go out on it.
enum Drop {
    Paused,
    OtherLayer,
    AwaitingKeyframe,
    Stale,
}

/// Where a leg's numbering starts: anywhere on a new SSRC (random in production); on a
/// reused one, after everything the leg before it sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegStart {
    pub sequence_number: u16,
    pub timestamp: u32,
    pub pictures: PicturesSent,
}

impl LegStart {
    /// A start on an SSRC nothing was sent on.
    pub fn fresh(sequence_number: u16, timestamp: u32) -> LegStart {
        LegStart {
            sequence_number,
            timestamp,
            pictures: PicturesSent::default(),
        }
    }
}

/// What the subscriber leg negotiated, as read from its RTP sender once bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegParams {
    pub ssrc: u32,
    pub payload_type: u8,
    pub ext_map: ExtMap,
}

/// What became of the packets offered to one leg, by cause. Every packet of its track
/// that reaches the leg is counted once as offered, and once as forwarded or as one
/// drop: `offered + replayed == forwarded + dropped()` (tests/drop_accounting.rs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LegCounts {
    pub offered: u64,
    /// Held packets offered again after a late keyframe start (engine/held.rs).
    pub replayed: u64,
    pub forwarded: u64,
    /// The allocator paused the leg (no room in the subscriber's downlink, or hidden).
    pub paused: u64,
    /// A simulcast layer the leg is not on.
    pub other_layer: u64,
    /// The leg's layer (or its first) before the keyframe it must start on.
    pub awaiting_keyframe: u64,
    /// Too old or repeated to number into the leg's sequence.
    pub stale: u64,
}

impl LegCounts {
    pub fn dropped(&self) -> u64 {
        self.paused + self.other_layer + self.awaiting_keyframe + self.stale
    }

    pub fn add(&mut self, o: &LegCounts) {
        self.offered += o.offered;
        self.replayed += o.replayed;
        self.forwarded += o.forwarded;
        self.paused += o.paused;
        self.other_layer += o.other_layer;
        self.awaiting_keyframe += o.awaiting_keyframe;
        self.stale += o.stale;
    }
}

#[derive(Debug)]
pub struct Consumer {
    pub leg: LegId,
    pub subscriber: ParticipantId,
    pub producer: TrackId,
    params: LegParams,
    rewriter: SeqTsRewriter,
    /// VP8 PictureID and TL0PICIDX continuity across this leg's layer switches.
    pictures: PictureNumbering,
    /// RTP clock of the codec, to turn wall-clock gaps into timestamp gaps on a switch.
    clock_rate: u32,
    /// Video starts (and switches layers) only on a keyframe, so the decoder never
    /// gets a picture it cannot decode; audio is always "on" layer 0.
    needs_keyframe: bool,
    /// The layer being forwarded; `None` until the first keyframe (video).
    current: Option<usize>,
    /// The layer the allocator chose; `None` = paused (nothing is forwarded).
    target: Option<usize>,
    last_forwarded: Option<Instant>,
    /// When the allocator last moved it to a lower layer (or paused it).
    lowered_at: Option<Instant>,
    pub forwarded: u64,
    pub layer_switches: u64,
    pub counts: LegCounts,
    /// Padding went out on this leg (its numbering has started).
    padded: bool,
}

impl Consumer {
    pub fn new(
        leg: LegId,
        subscriber: ParticipantId,
        producer: TrackId,
        params: LegParams,
        needs_keyframe: bool,
        clock_rate: u32,
        start: LegStart,
    ) -> Self {
        Consumer {
            leg,
            subscriber,
            producer,
            params,
            rewriter: SeqTsRewriter::new(start.sequence_number, start.timestamp),
            pictures: PictureNumbering::after(start.pictures),
            clock_rate,
            needs_keyframe,
            current: (!needs_keyframe).then_some(0),
            target: Some(0),
            last_forwarded: None,
            lowered_at: None,
            forwarded: 0,
            layer_switches: 0,
            counts: LegCounts::default(),
            padded: false,
        }
    }

    /// Where a later leg on the same SSRC continues numbering (see `SeqTsRewriter`).
    pub fn resume_point(&self) -> LegStart {
        let (sequence_number, timestamp) = self.rewriter.resume_point();
        LegStart {
            sequence_number,
            timestamp,
            pictures: self.pictures.sent(),
        }
    }

    pub fn current_layer(&self) -> Option<usize> {
        self.current
    }

    pub fn target_layer(&self) -> Option<usize> {
        self.target
    }

    /// When the allocator last moved the leg down.
    pub fn lowered_at(&self) -> Option<Instant> {
        self.lowered_at
    }

    pub fn lowered(&mut self, now: Instant) {
        self.lowered_at = Some(now);
    }

    /// The layer this leg waits for a keyframe of, if it waits.
    pub fn awaited_keyframe(&self) -> Option<usize> {
        match self.target {
            Some(t) if self.needs_keyframe && self.current != Some(t) => Some(t),
            _ => None,
        }
    }

    /// The allocator's choice. A paused leg stops at once; a new layer starts on its next
    /// keyframe, and until then the current layer keeps flowing (no freeze on a switch).
    pub fn set_target(&mut self, layer: Option<usize>) {
        self.target = layer;
        if layer.is_none() && self.needs_keyframe {
            self.current = None;
        }
    }

    /// What was forwarded so far never reached the subscriber (its connection was not
    /// up): a video leg waits for a keyframe again. True when it now waits.
    pub fn restart(&mut self) -> bool {
        if self.needs_keyframe && self.current.is_some() {
            self.current = None;
            return true;
        }
        false
    }

    /// Decides whether a packet of `layer` goes out on this leg and with what header;
    /// counts the decision (forwarded, or dropped by cause).
    pub fn forward(
        &mut self,
        layer: usize,
        seq: u16,
        ts: u32,
        is_keyframe_start: bool,
        now: Instant,
    ) -> Option<RewrittenHeader> {
        let decided = self.decide(layer, seq, ts, is_keyframe_start, now);
        match decided {
            Ok(_) => self.counts.forwarded += 1,
            Err(Drop::Paused) => self.counts.paused += 1,
            Err(Drop::OtherLayer) => self.counts.other_layer += 1,
            Err(Drop::AwaitingKeyframe) => self.counts.awaiting_keyframe += 1,
            Err(Drop::Stale) => self.counts.stale += 1,
        }
        decided.ok()
    }

    fn decide(
        &mut self,
        layer: usize,
        seq: u16,
        ts: u32,
        is_keyframe_start: bool,
        now: Instant,
    ) -> Result<RewrittenHeader, Drop> {
        let target = self.target.ok_or(Drop::Paused)?;
        let (sequence_number, timestamp) = if self.current == Some(layer) {
            self.rewriter.rewrite(seq, ts).ok_or(Drop::Stale)?
        } else if layer == target && (is_keyframe_start || !self.needs_keyframe) {
            let started = self.current.is_some() || self.forwarded > 0 || self.padded;
            self.current = Some(layer);
            if started {
                self.layer_switches += 1;
                let gap = self.last_forwarded.map_or(1, |t| {
                    let elapsed = now.saturating_duration_since(t).as_micros() as u64;
                    (elapsed * self.clock_rate as u64 / 1_000_000).clamp(1, u32::MAX as u64) as u32
                });
                self.rewriter.switch_source(seq, ts, gap)
            } else {
                self.rewriter.rewrite(seq, ts).ok_or(Drop::Stale)?
            }
        } else if layer == target {
            return Err(Drop::AwaitingKeyframe);
        } else {
            return Err(Drop::OtherLayer);
        };
        self.forwarded += 1;
        self.last_forwarded = Some(now);
        Ok(RewrittenHeader {
            ssrc: self.params.ssrc,
            sequence_number,
            timestamp,
            payload_type: self.params.payload_type,
            ext_map: self.params.ext_map,
            vp8: None,
        })
    }

    /// The VP8 picture numbering a forwarded packet that carried `source` goes out
    /// with; `starts_layer` when it started the leg's layer (its keyframe). `None`:
    /// unchanged.
    pub fn renumber_pictures(
        &mut self,
        source: Vp8Numbering,
        starts_layer: bool,
    ) -> Option<Vp8Numbering> {
        self.pictures.renumber(source, starts_layer)
    }

    /// Sequence numbers for `n` padding packets (bandwidth probes) on this leg, and the
    /// header they carry; `None` while nothing was sent on it. A paused leg can carry
    /// them too: that is how a subscriber dropped to audio-only finds its way back.
    pub fn padding(&mut self, n: u16) -> Option<RewrittenHeader> {
        let (sequence_number, timestamp) = self.rewriter.take_padding(n)?;
        self.padded = true;
        Some(RewrittenHeader {
            ssrc: self.params.ssrc,
            sequence_number,
            timestamp,
            payload_type: self.params.payload_type,
            ext_map: ExtMap::default(),
            vp8: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn consumer(needs_keyframe: bool) -> Consumer {
        let params = LegParams {
            ssrc: 0xabcd,
            payload_type: 120,
            ext_map: ExtMap::default(),
        };
        Consumer::new(
            LegId(1),
            ParticipantId(2),
            TrackId(3),
            params,
            needs_keyframe,
            90_000,
            LegStart::fresh(100, 1000),
        )
    }

    #[test]
    fn video_leg_starts_on_a_keyframe() {
        let t0 = Instant::now();
        let mut c = consumer(true);
        assert_eq!(c.forward(0, 10, 0, false, t0), None);
        assert_eq!(c.forward(0, 11, 0, false, t0), None);
        let h = c
            .forward(0, 12, 3000, true, t0)
            .expect("keyframe starts the leg");
        assert_eq!(
            (h.ssrc, h.payload_type, h.sequence_number, h.timestamp),
            (0xabcd, 120, 100, 1000)
        );
        let h = c
            .forward(0, 13, 3000, false, t0)
            .expect("then everything flows");
        assert_eq!(h.sequence_number, 101);
        assert_eq!(c.counts.awaiting_keyframe, 2);
        assert_eq!(c.forwarded, 2);
    }

    #[test]
    fn audio_leg_forwards_at_once() {
        let mut c = consumer(false);
        assert!(c.forward(0, 10, 0, false, Instant::now()).is_some());
    }

    #[test]
    fn a_switch_waits_for_the_target_layers_keyframe_and_stays_continuous() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = consumer(true);
        c.set_target(Some(2));
        c.forward(2, 500, 90_000, true, ms(0)).unwrap();
        c.forward(2, 501, 93_000, false, ms(33)).unwrap();
        // The allocator drops to layer 0: layer 2 keeps flowing until layer 0's keyframe.
        c.set_target(Some(0));
        assert_eq!(c.awaited_keyframe(), Some(0));
        assert_eq!(c.forward(0, 7000, 5_000, false, ms(40)), None);
        let h = c
            .forward(2, 502, 96_000, false, ms(66))
            .expect("old layer until then");
        assert_eq!(h.sequence_number, 102);
        let h = c
            .forward(0, 7001, 8_000, true, ms(99))
            .expect("keyframe switches");
        assert_eq!(h.sequence_number, 103, "numbering continues");
        assert_eq!(
            h.timestamp,
            1000 + 6000 + 2970,
            "33 ms after the last packet"
        );
        assert_eq!(
            c.forward(2, 503, 99_000, false, ms(100)),
            None,
            "old layer stops"
        );
        assert_eq!(
            c.forward(0, 7002, 11_000, false, ms(132))
                .unwrap()
                .sequence_number,
            104
        );
        assert_eq!((c.layer_switches, c.awaited_keyframe()), (1, None));
    }

    #[test]
    fn a_paused_leg_forwards_nothing_and_restarts_on_a_keyframe() {
        let t0 = Instant::now();
        let mut c = consumer(true);
        c.forward(0, 1, 0, true, t0).unwrap();
        c.set_target(None);
        assert_eq!(c.forward(0, 2, 0, false, t0), None);
        assert_eq!(c.forward(0, 3, 0, true, t0), None, "paused");
        c.set_target(Some(0));
        assert_eq!(c.forward(0, 4, 0, false, t0), None, "waits for a keyframe");
        let h = c.forward(0, 5, 3000, true, t0).unwrap();
        assert_eq!(h.sequence_number, 101, "continues after the last one sent");
    }

    #[test]
    fn padding_takes_the_next_numbers() {
        let t0 = Instant::now();
        let mut c = consumer(true);
        let p = c.padding(1).unwrap();
        assert_eq!(
            p.sequence_number, 100,
            "a leg that sent nothing pads from its start"
        );
        let h = c.forward(0, 1, 0, true, t0).unwrap();
        assert_eq!(h.sequence_number, 101, "media continues after the padding");
        let mut c = consumer(true);
        c.forward(0, 1, 0, true, t0).unwrap();
        let p = c.padding(2).unwrap();
        assert_eq!((p.sequence_number, p.ssrc), (101, 0xabcd));
        assert_eq!(c.forward(0, 2, 0, false, t0).unwrap().sequence_number, 103);
    }
}
