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
}

/// Sequence number and timestamp continuity for one leg.
///
/// The first forwarded packet anchors the mapping; later packets keep their distance to it
/// (modulo 2^16 and 2^32), so reordering and loss upstream show up unchanged downstream
/// and the subscriber's NACKs name packets the leg really sent.
#[derive(Clone, Debug)]
pub struct SeqTsRewriter {
    anchor: Option<Anchor>,
    out_seq_base: u16,
    out_ts_base: u32,
}

#[derive(Clone, Copy, Debug)]
struct Anchor {
    in_seq: u16,
    in_ts: u32,
    /// Highest incoming sequence number seen, in extended (unwrapped) form.
    highest_ext_seq: i64,
}

/// Whether `a` is newer than `b` in RFC 3550 serial-number arithmetic.
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl SeqTsRewriter {
    /// `out_seq_base`/`out_ts_base`: where this leg's numbering starts (random in
    /// production, fixed in tests).
    pub fn new(out_seq_base: u16, out_ts_base: u32) -> Self {
        SeqTsRewriter {
            anchor: None,
            out_seq_base,
            out_ts_base,
        }
    }

    /// Returns the leg's (sequence number, timestamp) for an incoming packet, or `None`
    /// for a packet older than the one the leg started at (it was never sent on the leg).
    pub fn rewrite(&mut self, seq: u16, ts: u32) -> Option<(u16, u32)> {
        let anchor = match self.anchor.as_mut() {
            None => {
                self.anchor = Some(Anchor {
                    in_seq: seq,
                    in_ts: ts,
                    highest_ext_seq: 0,
                });
                return Some((self.out_seq_base, self.out_ts_base));
            }
            Some(a) => a,
        };
        // Distance from the highest seen, signed, so late packets land behind it.
        let highest_in = anchor.in_seq.wrapping_add(anchor.highest_ext_seq as u16);
        let delta = seq.wrapping_sub(highest_in) as i16 as i64;
        let ext = anchor.highest_ext_seq + delta;
        if ext < 0 {
            return None;
        }
        if delta > 0 {
            anchor.highest_ext_seq = ext;
        }
        let out_seq = self.out_seq_base.wrapping_add(ext as u16);
        let out_ts = self.out_ts_base.wrapping_add(ts.wrapping_sub(anchor.in_ts));
        Some((out_seq, out_ts))
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
