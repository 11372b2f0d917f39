//! One (subscriber, producer) leg: gates video on a keyframe, rewrites headers, counts.

use super::rewrite::{ExtMap, RewrittenHeader, SeqTsRewriter};
use crate::id::{LegId, ParticipantId, TrackId};

/// What the subscriber leg negotiated, as read from its RTP sender once bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegParams {
    pub ssrc: u32,
    pub payload_type: u8,
    pub ext_map: ExtMap,
}

#[derive(Debug)]
pub struct Consumer {
    pub leg: LegId,
    pub subscriber: ParticipantId,
    pub producer: TrackId,
    params: LegParams,
    rewriter: SeqTsRewriter,
    /// Video waits for a keyframe before its first packet, so the decoder never starts
    /// on a picture it cannot decode.
    waiting_for_keyframe: bool,
    pub forwarded: u64,
    pub skipped_before_keyframe: u64,
}

impl Consumer {
    pub fn new(
        leg: LegId,
        subscriber: ParticipantId,
        producer: TrackId,
        params: LegParams,
        needs_keyframe: bool,
        seq_ts_base: (u16, u32),
    ) -> Self {
        Consumer {
            leg,
            subscriber,
            producer,
            params,
            rewriter: SeqTsRewriter::new(seq_ts_base.0, seq_ts_base.1),
            waiting_for_keyframe: needs_keyframe,
            forwarded: 0,
            skipped_before_keyframe: 0,
        }
    }

    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Decides whether a packet goes out on this leg and with what header.
    pub fn forward(
        &mut self,
        seq: u16,
        ts: u32,
        is_keyframe_start: bool,
    ) -> Option<RewrittenHeader> {
        if self.waiting_for_keyframe {
            if !is_keyframe_start {
                self.skipped_before_keyframe += 1;
                return None;
            }
            self.waiting_for_keyframe = false;
        }
        let (sequence_number, timestamp) = self.rewriter.rewrite(seq, ts)?;
        self.forwarded += 1;
        Some(RewrittenHeader {
            ssrc: self.params.ssrc,
            sequence_number,
            timestamp,
            payload_type: self.params.payload_type,
            ext_map: self.params.ext_map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (100, 1000),
        )
    }

    #[test]
    fn video_leg_starts_on_a_keyframe() {
        let mut c = consumer(true);
        assert_eq!(c.forward(10, 0, false), None);
        assert_eq!(c.forward(11, 0, false), None);
        let h = c.forward(12, 3000, true).expect("keyframe starts the leg");
        assert_eq!(
            (h.ssrc, h.payload_type, h.sequence_number, h.timestamp),
            (0xabcd, 120, 100, 1000)
        );
        let h = c.forward(13, 3000, false).expect("then everything flows");
        assert_eq!(h.sequence_number, 101);
        assert_eq!(c.skipped_before_keyframe, 2);
        assert_eq!(c.forwarded, 2);
    }

    #[test]
    fn audio_leg_forwards_at_once() {
        let mut c = consumer(false);
        assert!(c.forward(10, 0, false).is_some());
    }
}
