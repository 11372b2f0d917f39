//! Per-leg RTP header rewriting: each subscriber leg has its own SSRC, sequence-number
//! space, timestamp base, payload type and header-extension ids, negotiated on THAT
//! connection. webrtc-rs silently drops a packet whose SSRC, payload type or extension ids
//! were not negotiated on the leg, so every forwarded packet goes through here.

/// Header extensions that describe the media itself and so pass from publisher to
/// subscriber (mediasoup's ingress allowlist works the same way). Everything else is
/// about ONE transport and must not cross: MID and rid name the publisher's m-section
/// and layer, transport-cc and abs-send-time number and time the publisher's own
/// packets (a subscriber's bandwidth estimate needs its own sequence, stamped on its
/// leg), so those are stripped.
pub const FORWARDED_EXTENSIONS: &[&str] = &[
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "urn:3gpp:video-orientation",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time",
    "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
    "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type",
    "http://www.webrtc.org/experiments/rtp-hdrext/color-space",
];

/// Maps a publisher's header-extension ids to one subscriber leg's ids.
/// Index = incoming id (one-byte header ids 1..=14, two-byte up to 15 here); value = outgoing
/// id, 0 = not negotiated on the leg (the extension is stripped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtMap(pub [u8; 16]);

impl ExtMap {
    /// Builds the map from `(incoming id, uri)` and `(outgoing id, uri)` lists; only
    /// [`FORWARDED_EXTENSIONS`] are mapped.
    pub fn between<'a>(
        incoming: impl IntoIterator<Item = (u8, &'a str)>,
        outgoing: &[(u8, &str)],
    ) -> ExtMap {
        let mut map = [0u8; 16];
        for (in_id, uri) in incoming {
            if !FORWARDED_EXTENSIONS.contains(&uri) {
                continue;
            }
            if let (Some(slot), Some((out_id, _))) = (
                map.get_mut(in_id as usize),
                outgoing.iter().find(|(_, u)| *u == uri),
            ) {
                *slot = *out_id;
            }
        }
        ExtMap(map)
    }

    /// The leg's id for an incoming id, `None` when the leg did not negotiate it.
    pub fn get(&self, incoming: u8) -> Option<u8> {
        match self.0.get(incoming as usize) {
            Some(0) | None => None,
            Some(out) => Some(*out),
        }
    }
}

/// The header fields a forwarded packet gets on one leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RewrittenHeader {
    pub ssrc: u32,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub ext_map: ExtMap,
    /// The VP8 picture numbering the payload goes out with, where the leg renumbers it
    /// (after a layer switch: [`super::picture_numbering`]); `None`: as it came.
    pub vp8: Option<super::codec::Vp8Numbering>,
}

/// Sequence number and timestamp continuity for one leg.
///
/// The first forwarded packet anchors the mapping; later packets keep their distance to it
/// (modulo 2^16 and 2^32), so reordering and loss upstream show up unchanged downstream
/// and the subscriber's NACKs name packets the leg really sent. Two things move the
/// mapping (mediasoup's `SeqManager` does the same): a switch to another simulcast layer
/// re-anchors on the new layer's keyframe right after the last number sent, and padding
/// probes take numbers of their own, which later packets step over.
#[derive(Clone, Debug)]
pub struct SeqTsRewriter {
    anchor: Option<Anchor>,
    out_seq_base: u16,
    out_ts_base: u32,
    /// The highest sequence number sent on the leg (media or padding) and the timestamp
    /// that went with it: where a switch or a padding burst continues from.
    highest_out: Option<(u16, u32)>,
}

/// The timestamp step to a leg resumed on the same SSRC (a new track: any step will
/// do, forwards keeps the receiver's jitter estimate sane).
const RESUME_TS_GAP: u32 = 3000;

/// Padding bursts remembered per anchor; an older packet arriving later than this many
/// bursts is dropped (probes come seconds apart, so this is never close in practice).
const MAX_PADDING_POINTS: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Anchor {
    in_seq: u16,
    in_ts: u32,
    out_seq: u16,
    out_ts: u32,
    /// Highest incoming sequence number seen, in extended (unwrapped) form, 0 = the anchor.
    highest_ext_seq: i64,
    /// (extended seq, numbers taken by padding right after it), oldest first.
    padding: [(i64, u16); MAX_PADDING_POINTS],
    padding_points: usize,
}

impl Anchor {
    fn new(in_seq: u16, in_ts: u32, out_seq: u16, out_ts: u32) -> Anchor {
        Anchor {
            in_seq,
            in_ts,
            out_seq,
            out_ts,
            highest_ext_seq: 0,
            padding: [(0, 0); MAX_PADDING_POINTS],
            padding_points: 0,
        }
    }

    /// Numbers taken by padding before the packet `ext`.
    fn padding_before(&self, ext: i64) -> u16 {
        self.padding[..self.padding_points]
            .iter()
            .filter(|(at, _)| ext > *at)
            .fold(0u16, |sum, (_, n)| sum.wrapping_add(*n))
    }
}

/// Whether `a` is newer than `b` in RFC 3550 serial-number arithmetic.
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl SeqTsRewriter {
    /// Where a leg that takes over this one's SSRC continues numbering (the engine
    /// reuses a departed track's m-section, SSRC and all): past everything this leg
    /// sent, since the subscriber's SRTP replay check drops any sequence number at or
    /// below the highest it has seen on the SSRC. A leg that sent nothing passes on
    /// where it was to start.
    pub fn resume_point(&self) -> (u16, u32) {
        match self.highest_out {
            Some((seq, ts)) => (seq.wrapping_add(1), ts.wrapping_add(RESUME_TS_GAP)),
            None => (self.out_seq_base, self.out_ts_base),
        }
    }

    /// `out_seq_base`/`out_ts_base`: where this leg's numbering starts (random in
    /// production, fixed in tests).
    pub fn new(out_seq_base: u16, out_ts_base: u32) -> Self {
        SeqTsRewriter {
            anchor: None,
            out_seq_base,
            out_ts_base,
            highest_out: None,
        }
    }

    /// Returns the leg's (sequence number, timestamp) for an incoming packet, or `None`
    /// for a packet older than the one the leg (re)started at: it was never sent on the leg.
    pub fn rewrite(&mut self, seq: u16, ts: u32) -> Option<(u16, u32)> {
        let Some(anchor) = self.anchor.as_mut() else {
            let (out_seq, out_ts) = (self.out_seq_base, self.out_ts_base);
            self.anchor = Some(Anchor::new(seq, ts, out_seq, out_ts));
            self.highest_out = Some((out_seq, out_ts));
            return Some((out_seq, out_ts));
        };
        // Distance from the highest seen, signed, so late packets land behind it.
        let highest_in = anchor.in_seq.wrapping_add(anchor.highest_ext_seq as u16);
        let delta = seq.wrapping_sub(highest_in) as i16 as i64;
        let ext = anchor.highest_ext_seq + delta;
        if ext < 0 {
            return None;
        }
        if anchor.padding_points == MAX_PADDING_POINTS && ext <= anchor.padding[0].0 {
            return None; // older than every padding point still remembered
        }
        let out_seq = anchor
            .out_seq
            .wrapping_add(ext as u16)
            .wrapping_add(anchor.padding_before(ext));
        let out_ts = anchor.out_ts.wrapping_add(ts.wrapping_sub(anchor.in_ts));
        if delta > 0 {
            anchor.highest_ext_seq = ext;
            self.highest_out = Some((out_seq, out_ts));
        }
        Some((out_seq, out_ts))
    }

    /// Continues the leg on another source (a simulcast layer switch): the packet
    /// (`seq`, `ts`), a keyframe of the new layer, gets the number after the last one
    /// sent and a timestamp `ts_gap` after the last one sent (layers have unrelated
    /// timestamp bases; the caller derives the gap from the time between the two).
    pub fn switch_source(&mut self, seq: u16, ts: u32, ts_gap: u32) -> (u16, u32) {
        if self.anchor.is_none() {
            // Only padding went out before: continue after it, at the leg's start time.
            self.anchor = Some(Anchor::new(seq, ts, self.out_seq_base, self.out_ts_base));
            self.highest_out = Some((self.out_seq_base, self.out_ts_base));
            return (self.out_seq_base, self.out_ts_base);
        }
        let (out_seq, out_ts) = match self.highest_out {
            Some((s, t)) => (s.wrapping_add(1), t.wrapping_add(ts_gap.max(1))),
            None => (self.out_seq_base, self.out_ts_base),
        };
        self.anchor = Some(Anchor::new(seq, ts, out_seq, out_ts));
        self.highest_out = Some((out_seq, out_ts));
        (out_seq, out_ts)
    }

    /// Takes `n` sequence numbers right after the last one sent, for padding packets, and
    /// returns the first one and the timestamp to give them (the last one sent: padding
    /// carries no media, and a new timestamp would look like a frame to the receiver).
    /// `None` before anything was sent: there is no stream to pad yet.
    pub fn take_padding(&mut self, n: u16) -> Option<(u16, u32)> {
        let Some(anchor) = self.anchor.as_mut() else {
            // Nothing sent yet (a leg paused from the start): pad from the leg's first
            // numbers; the first media packet will start after them.
            let first = self.out_seq_base;
            self.out_seq_base = first.wrapping_add(n);
            return Some((first, self.out_ts_base));
        };
        let (last_seq, last_ts) = self.highest_out?;
        let at = anchor.highest_ext_seq;
        let points = anchor.padding_points;
        match anchor.padding[..points].last_mut() {
            Some((p, count)) if *p == at => *count = count.wrapping_add(n),
            _ => {
                if points == MAX_PADDING_POINTS {
                    anchor.padding.copy_within(1.., 0);
                    anchor.padding[MAX_PADDING_POINTS - 1] = (at, n);
                } else {
                    anchor.padding[points] = (at, n);
                    anchor.padding_points += 1;
                }
            }
        }
        let first = last_seq.wrapping_add(1);
        self.highest_out = Some((last_seq.wrapping_add(n), last_ts));
        Some((first, last_ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_and_timestamps_wrap_around() {
        let mut rw = SeqTsRewriter::new(65_534, u32::MAX - 1000);
        assert_eq!(rw.rewrite(100, 5_000), Some((65_534, u32::MAX - 1000)));
        assert_eq!(
            rw.rewrite(101, 8_000),
            Some((65_535, (u32::MAX - 1000).wrapping_add(3000)))
        );
        let (s, t) = rw.rewrite(102, 8_000).unwrap();
        assert_eq!(s, 0, "output sequence wraps to 0");
        assert_eq!(
            t,
            (u32::MAX - 1000).wrapping_add(3000),
            "output timestamp wraps"
        );
        assert_eq!(rw.rewrite(103, 11_000).unwrap().0, 1);
    }

    #[test]
    fn incoming_wrap_around_keeps_continuity() {
        let mut rw = SeqTsRewriter::new(1000, 0);
        assert_eq!(rw.rewrite(65_534, u32::MAX - 10), Some((1000, 0)));
        assert_eq!(rw.rewrite(65_535, u32::MAX), Some((1001, 10)));
        assert_eq!(rw.rewrite(0, 20), Some((1002, 31)));
        assert_eq!(rw.rewrite(1, 20), Some((1003, 31)));
    }

    #[test]
    fn reordered_and_lost_packets_keep_their_distance() {
        let mut rw = SeqTsRewriter::new(10, 0);
        rw.rewrite(500, 0);
        assert_eq!(rw.rewrite(503, 0).unwrap().0, 13, "a gap stays a gap");
        assert_eq!(rw.rewrite(501, 0).unwrap().0, 11, "a late packet fills it");
        assert_eq!(rw.rewrite(504, 0).unwrap().0, 14);
    }

    #[test]
    fn packets_older_than_the_start_are_not_forwarded() {
        let mut rw = SeqTsRewriter::new(10, 0);
        rw.rewrite(500, 0);
        assert_eq!(rw.rewrite(499, 0), None);
        assert_eq!(
            rw.rewrite(500, 0),
            Some((10, 0)),
            "a duplicate maps to the same number"
        );
    }

    #[test]
    fn a_layer_switch_continues_numbering_and_time() {
        let mut rw = SeqTsRewriter::new(100, 1000);
        rw.rewrite(5000, 90_000);
        rw.rewrite(5001, 93_000);
        // The new layer has its own numbering and timestamp base.
        assert_eq!(rw.switch_source(40, 7_000_000, 3000), (102, 7_000));
        assert_eq!(rw.rewrite(41, 7_003_000), Some((103, 10_000)));
        assert_eq!(rw.rewrite(39, 6_997_000), None, "older than the switch");
    }

    #[test]
    fn padding_takes_numbers_that_later_packets_step_over() {
        let mut rw = SeqTsRewriter::new(10, 0);
        assert_eq!(
            rw.take_padding(3),
            Some((10, 0)),
            "before any media: the first numbers"
        );
        let mut rw = SeqTsRewriter::new(10, 0);
        rw.rewrite(500, 0);
        rw.rewrite(502, 3000); // 501 is late
        assert_eq!(rw.take_padding(3), Some((13, 3000)));
        assert_eq!(rw.rewrite(503, 6000), Some((16, 6000)), "after the padding");
        assert_eq!(
            rw.rewrite(501, 0),
            Some((11, 0)),
            "a late packet keeps its number"
        );
        assert_eq!(rw.take_padding(1), Some((17, 6000)));
        assert_eq!(
            rw.take_padding(1),
            Some((18, 6000)),
            "merged into one point"
        );
        assert_eq!(rw.rewrite(504, 9000), Some((19, 9000)));
    }

    #[test]
    fn ext_map_translates_by_uri_and_strips_unknown() {
        const LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
        const ORIENTATION: &str = "urn:3gpp:video-orientation";
        const TWCC: &str =
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
        const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
        let map = ExtMap::between(
            [
                (1, LEVEL),
                (3, TWCC),
                (4, MID),
                (15, ORIENTATION),
                (6, "urn:x"),
            ],
            &[
                (5, LEVEL),
                (15, ORIENTATION),
                (3, TWCC),
                (4, MID),
                (6, "urn:x"),
            ],
        );
        assert_eq!(map.get(1), Some(5));
        assert_eq!(map.get(15), Some(15));
        assert_eq!(map.get(3), None, "transport-cc is per transport");
        assert_eq!(map.get(4), None, "MID names the publisher's m-section");
        assert_eq!(map.get(6), None, "unknown extensions are not forwarded");
        assert_eq!(map.get(200), None);
    }

    #[test]
    fn serial_number_comparison() {
        assert!(seq_newer(1, 0));
        assert!(seq_newer(0, 65_535));
        assert!(!seq_newer(65_535, 0));
        assert!(!seq_newer(7, 7));
    }
}
