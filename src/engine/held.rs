//! Packets of a layer some leg waits for a keyframe of, kept for a moment.
//!
//! A leg switches layers on the first packet of a keyframe. On a lossy uplink that
//! packet is sometimes lost and comes back resent, a round trip after the rest of the
//! picture; the rest was not forwarded (the leg was not on that layer yet), the
//! subscriber's NACKs for it find nothing to resend, and the keyframe it waited for is
//! useless: another keyframe request, another second of frozen video. At 15 % uplink
//! loss one switch in seven went that way. So while a leg waits, the engine holds that
//! layer's packets here, and when the late first packet starts the leg, what arrived
//! after it in sequence is forwarded at once ([`crate::room::Room::replay`]).
//!
//! Nothing is held while no leg waits: the steady packet path pays one map check.

use std::collections::{HashMap, VecDeque};

use rtc::rtp;

use crate::id::TrackId;

/// Packets held per (track, layer): a second of a full layer, a few keyframes of a
/// small one.
const MAX_HELD: usize = 256;
/// Packets this far (or further) in sequence after the keyframe are not replayed: they
/// are from before a wrap or a restart, not from its picture.
const MAX_REPLAY_DISTANCE: u16 = 1024;

#[derive(Debug, Default)]
pub struct HeldPackets {
    by_layer: HashMap<(TrackId, usize), VecDeque<rtp::Packet>>,
}

impl HeldPackets {
    /// Keeps a packet of a layer that a leg waits for, or forgets that layer's packets
    /// once none waits.
    pub fn note(&mut self, track: TrackId, layer: usize, waited_for: bool, packet: &rtp::Packet) {
        if waited_for {
            let held = self.by_layer.entry((track, layer)).or_default();
            if held.len() == MAX_HELD {
                held.pop_front();
            }
            held.push_back(packet.clone());
        } else if !self.by_layer.is_empty() {
            self.by_layer.remove(&(track, layer));
        }
    }

    /// The held packets of `(track, layer)` numbered after `keyframe_seq`, in sequence
    /// order.
    pub fn after(&self, track: TrackId, layer: usize, keyframe_seq: u16) -> Vec<&rtp::Packet> {
        let Some(held) = self.by_layer.get(&(track, layer)) else {
            return Vec::new();
        };
        let distance = |p: &rtp::Packet| p.header.sequence_number.wrapping_sub(keyframe_seq);
        let mut after: Vec<&rtp::Packet> = held
            .iter()
            .filter(|p| (1..MAX_REPLAY_DISTANCE).contains(&distance(p)))
            .collect();
        after.sort_by_key(|p| distance(p));
        after.dedup_by_key(|p| p.header.sequence_number);
        after
    }

    /// A track is gone: nothing of it is held.
    pub fn forget_track(&mut self, track: TrackId) {
        self.by_layer.retain(|(t, _), _| *t != track);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_layer.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                sequence_number: seq,
                ..Default::default()
            },
            payload: Default::default(),
        }
    }

    #[test]
    fn holds_only_while_waited_for_and_replays_in_order() {
        let cam = TrackId(1);
        let mut h = HeldPackets::default();
        h.note(cam, 2, false, &packet(1));
        assert_eq!(h.len(), 0, "nobody waits");
        for seq in [65_534, 2, 0, 1, 65_535, 1] {
            h.note(cam, 2, true, &packet(seq));
        }
        let seqs: Vec<u16> = h
            .after(cam, 2, 65_533)
            .iter()
            .map(|p| p.header.sequence_number)
            .collect();
        assert_eq!(
            seqs,
            [65_534, 65_535, 0, 1, 2],
            "across the wrap, once each"
        );
        assert!(h.after(cam, 2, 2).is_empty(), "nothing after the newest");
        assert!(h.after(cam, 1, 0).is_empty(), "another layer holds nothing");
        h.note(cam, 2, false, &packet(3));
        assert_eq!(h.len(), 0, "forgotten once nobody waits");
    }

    #[test]
    fn bounded() {
        let mut h = HeldPackets::default();
        for seq in 0..1000 {
            h.note(TrackId(1), 0, true, &packet(seq));
        }
        assert_eq!(h.len(), MAX_HELD);
        h.forget_track(TrackId(1));
        assert_eq!(h.len(), 0);
    }
}
