//! Per-leg VP8 picture numbering, continuous across simulcast layer switches.
//!
//! A VP8 receiver orders frames by the payload descriptor's PictureID and finds a
//! frame's base-layer reference by TL0PICIDX. Chromium starts both at random for each
//! simulcast layer, so after a switch a leg's numbers jumped to an unrelated place: a
//! jump backwards made the receiver drop the new layer's frames as already decoded, or
//! tie them to the old layer's references, and the picture froze until its own
//! keyframe request three seconds later (tests/e2e/loss.test.mjs at 15 % loss: a
//! 2.9 s stall right after a switch, with every lost packet resent). The leg renumbers
//! each new layer to continue right after the last picture it sent, as mediasoup's
//! VP8 encoding context and LiveKit's VP8 munger do.

use super::codec::Vp8Numbering;

const PICTURE_ID_RANGE: u16 = 0x8000;

/// What one leg adds to the source layer's PictureID and TL0PICIDX, and the highest of
/// each it sent.
#[derive(Clone, Debug, Default)]
pub struct PictureNumbering {
    picture_id_offset: u16,
    tl0_offset: u8,
    last_picture_id: Option<u16>,
    last_tl0: Option<u8>,
}

/// The last VP8 picture numbers a leg sent: where the next leg on its SSRC continues
/// (the subscriber's receiver keeps its state for the SSRC, so a new track on a reused
/// m-section must not jump back either).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PicturesSent {
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
}

impl PictureNumbering {
    /// A leg's numbering, continuing after `sent` (a previous leg's on the same SSRC)
    /// from its first keyframe.
    pub fn after(sent: PicturesSent) -> PictureNumbering {
        PictureNumbering {
            last_picture_id: sent.picture_id,
            last_tl0: sent.tl0_pic_idx,
            ..PictureNumbering::default()
        }
    }

    /// What the leg sent last.
    pub fn sent(&self) -> PicturesSent {
        PicturesSent {
            picture_id: self.last_picture_id,
            tl0_pic_idx: self.last_tl0,
        }
    }
}

/// Whether picture id `a` comes after `b`, ids wrapping at `range`.
fn picture_id_newer(a: u16, b: u16, range: u16) -> bool {
    let d = a.wrapping_sub(b) % range;
    d != 0 && d < range / 2
}

/// Whether TL0PICIDX `a` comes after `b`.
fn tl0_newer(a: u8, b: u8) -> bool {
    a != b && a.wrapping_sub(b) < 0x80
}

impl PictureNumbering {
    /// The numbering a packet carrying `source` goes out with; `switched` when the packet
    /// starts a new layer on the leg (a keyframe), which then continues after the last
    /// picture sent. `None` when the packet goes out as it came.
    pub fn renumber(&mut self, source: Vp8Numbering, switched: bool) -> Option<Vp8Numbering> {
        if switched {
            if let (Some(id), Some(last)) = (source.picture_id, self.last_picture_id) {
                self.picture_id_offset = last.wrapping_add(1).wrapping_sub(id) % PICTURE_ID_RANGE;
            }
            if let (Some(idx), Some(last)) = (source.tl0_pic_idx, self.last_tl0) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(idx);
            }
        }
        // 7-bit ids wrap at 128, which divides the 15-bit range the offset lives in.
        let range = if source.long_picture_id {
            PICTURE_ID_RANGE
        } else {
            0x80
        };
        let out = Vp8Numbering {
            picture_id: source
                .picture_id
                .map(|id| id.wrapping_add(self.picture_id_offset) % range),
            tl0_pic_idx: source.tl0_pic_idx.map(|i| i.wrapping_add(self.tl0_offset)),
            ..source
        };
        if let Some(id) = out.picture_id {
            if self
                .last_picture_id
                .is_none_or(|last| picture_id_newer(id, last, range))
            {
                self.last_picture_id = Some(id);
            }
        }
        if let Some(idx) = out.tl0_pic_idx {
            if self.last_tl0.is_none_or(|last| tl0_newer(idx, last)) {
                self.last_tl0 = Some(idx);
            }
        }
        (out != source).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp8(picture_id: u16, tl0: u8) -> Vp8Numbering {
        Vp8Numbering {
            picture_id: Some(picture_id),
            long_picture_id: true,
            tl0_pic_idx: Some(tl0),
        }
    }

    fn ids(n: Option<Vp8Numbering>, source: Vp8Numbering) -> (u16, u8) {
        let n = n.unwrap_or(source);
        (n.picture_id.unwrap(), n.tl0_pic_idx.unwrap())
    }

    #[test]
    fn a_layer_switch_continues_after_the_last_picture_sent() {
        let mut leg = PictureNumbering::default();
        // The first layer goes out as it came.
        for (id, tl0) in [(30_000, 200), (30_001, 200), (30_002, 201)] {
            assert_eq!(leg.renumber(vp8(id, tl0), false), None);
        }
        // A switch to a layer numbered from elsewhere (behind, here): its keyframe
        // follows the last picture sent, and the layer keeps that offset.
        let key = vp8(1_000, 17);
        assert_eq!(ids(leg.renumber(key, true), key), (30_003, 202));
        let next = vp8(1_001, 18);
        assert_eq!(ids(leg.renumber(next, false), next), (30_004, 203));
        // Back to the first layer: on from the last sent again, across the wrap.
        let mut wrap = PictureNumbering::default();
        assert_eq!(wrap.renumber(vp8(0x7fff, 255), false), None);
        let key = vp8(500, 3);
        assert_eq!(ids(wrap.renumber(key, true), key), (0, 0));
        let next = vp8(501, 4);
        assert_eq!(ids(wrap.renumber(next, false), next), (1, 1));
    }

    #[test]
    fn a_leg_on_a_reused_ssrc_continues_after_the_one_before() {
        let mut first = PictureNumbering::default();
        first.renumber(vp8(4_000, 40), false);
        let mut next = PictureNumbering::after(first.sent());
        let key = vp8(100, 1);
        assert_eq!(ids(next.renumber(key, true), key), (4_001, 41));
        // A leg with nothing before it keeps the publisher's numbers.
        let mut fresh = PictureNumbering::after(PicturesSent::default());
        assert_eq!(fresh.renumber(key, true), None);
    }

    #[test]
    fn a_late_packet_does_not_move_the_switch_point_back() {
        let mut leg = PictureNumbering::default();
        leg.renumber(vp8(10, 1), false);
        leg.renumber(vp8(12, 2), false);
        leg.renumber(vp8(11, 1), false); // resent late
        let key = vp8(9_000, 90);
        assert_eq!(ids(leg.renumber(key, true), key), (13, 3));
    }

    #[test]
    fn a_7_bit_picture_id_stays_in_its_range_and_missing_fields_stay_missing() {
        let mut leg = PictureNumbering::default();
        leg.renumber(vp8(100, 5), false);
        let short = Vp8Numbering {
            picture_id: Some(120),
            long_picture_id: false,
            tl0_pic_idx: None,
        };
        let out = leg.renumber(short, true).unwrap();
        assert_eq!(out.picture_id, Some(101));
        assert_eq!(out.tl0_pic_idx, None);
        assert!(!out.long_picture_id);
    }
}
