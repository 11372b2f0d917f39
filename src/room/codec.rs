//! Recognising keyframes in RTP payloads, so a new subscriber leg starts on a picture the
//! decoder can use, and so keyframe requests can be counted as answered.

/// The codecs the router forwards. Anything else is negotiated away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Opus,
    Vp8,
    H264,
    /// Forwarded without keyframe detection (every packet counts as a start point).
    Other,
}

impl Codec {
    pub fn from_mime(mime: &str) -> Codec {
        match mime.to_ascii_lowercase().as_str() {
            "audio/opus" => Codec::Opus,
            "video/vp8" => Codec::Vp8,
            "video/h264" => Codec::H264,
            _ => Codec::Other,
        }
    }

    /// Whether a subscriber can start decoding at this packet.
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Codec::Vp8 => vp8_is_keyframe_start(payload),
            Codec::H264 => h264_is_keyframe(payload),
            Codec::Opus | Codec::Other => true,
        }
    }

    /// The RTP clock: what a wall-clock gap is in timestamp units.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            _ => 90_000,
        }
    }

    pub fn is_video(self) -> bool {
        matches!(self, Codec::Vp8 | Codec::H264)
    }

    /// The picture size a keyframe's first packet announces, where the codec says it
    /// in the first packet (VP8 does; H.264 hides it in the SPS, not read here). The
    /// allocator compares it with the size of the subscriber's tile.
    pub fn keyframe_size(self, payload: &[u8]) -> Option<(u16, u16)> {
        match self {
            Codec::Vp8 => vp8_keyframe_size(payload),
            _ => None,
        }
    }

    /// The picture numbering a packet carries, where the codec has one a leg must keep
    /// continuous across layer switches (VP8's payload descriptor).
    pub fn picture_numbering(self, payload: &[u8]) -> Option<Vp8Numbering> {
        match self {
            Codec::Vp8 => Vp8Numbering::read(payload),
            _ => None,
        }
    }
}

/// The picture numbering in a VP8 payload descriptor (RFC 7741 4.2): what a receiver
/// orders frames by and finds a frame's temporal references with. Each simulcast layer
/// numbers its pictures from its own random start, so a leg that switches layers must
/// renumber them ([`super::picture_numbering`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp8Numbering {
    /// PictureID, 7 or 15 bits.
    pub picture_id: Option<u16>,
    /// Whether PictureID is 15 bits long (M bit): the range it wraps in.
    pub long_picture_id: bool,
    /// TL0PICIDX: the index of the last base-temporal-layer picture.
    pub tl0_pic_idx: Option<u8>,
}

/// Where a VP8 payload descriptor keeps its numbering fields.
struct Vp8NumberingOffsets {
    /// PictureID's first byte, and whether it is 15 bits long.
    picture_id: Option<(usize, bool)>,
    tl0_pic_idx: Option<usize>,
}

/// Where a VP8 payload descriptor keeps its PictureID and TL0PICIDX; `None` for a
/// descriptor without the extension byte, or one cut short.
fn vp8_numbering_offsets(p: &[u8]) -> Option<Vp8NumberingOffsets> {
    if p.first()? & 0x80 == 0 {
        return None; // no X: no picture numbering
    }
    let &x = p.get(1)?;
    let mut i = 2;
    let mut picture_id = None;
    if x & 0x80 != 0 {
        let long = p.get(i)? & 0x80 != 0;
        picture_id = Some((i, long));
        i += if long { 2 } else { 1 };
    }
    let mut tl0 = None;
    if x & 0x40 != 0 {
        tl0 = Some(i);
        i += 1;
    }
    // The numbering fields must lie inside the packet (the last one read is i - 1).
    (i <= p.len()).then_some(Vp8NumberingOffsets {
        picture_id,
        tl0_pic_idx: tl0,
    })
}

impl Vp8Numbering {
    /// The numbering `payload` carries; `None` when it carries none.
    pub fn read(payload: &[u8]) -> Option<Vp8Numbering> {
        let Vp8NumberingOffsets {
            picture_id,
            tl0_pic_idx: tl0,
        } = vp8_numbering_offsets(payload)?;
        let n = Vp8Numbering {
            picture_id: picture_id.map(|(i, long)| {
                if long {
                    u16::from_be_bytes([payload[i] & 0x7f, payload[i + 1]])
                } else {
                    u16::from(payload[i] & 0x7f)
                }
            }),
            long_picture_id: picture_id.is_some_and(|(_, long)| long),
            tl0_pic_idx: tl0.map(|i| payload[i]),
        };
        (n.picture_id.is_some() || n.tl0_pic_idx.is_some()).then_some(n)
    }

    /// Writes this numbering into `payload`'s descriptor, in place (the fields keep
    /// their lengths: a 7-bit PictureID stays 7 bits). Fields the descriptor lacks are
    /// left out.
    pub fn write(&self, payload: &mut [u8]) {
        let Some(Vp8NumberingOffsets {
            picture_id,
            tl0_pic_idx: tl0,
        }) = vp8_numbering_offsets(payload)
        else {
            return;
        };
        if let (Some((i, long)), Some(id)) = (picture_id, self.picture_id) {
            if long {
                let [hi, lo] = (id & 0x7fff).to_be_bytes();
                payload[i] = 0x80 | hi;
                payload[i + 1] = lo;
            } else {
                payload[i] = (id & 0x7f) as u8;
            }
        }
        if let (Some(i), Some(idx)) = (tl0, self.tl0_pic_idx) {
            payload[i] = idx;
        }
    }
}

/// VP8 keyframe header (RFC 6386 9.1): 3-byte frame tag, start code 9d 01 2a, then
/// 14-bit width and height, little-endian, with 2 bits of scaling each.
fn vp8_keyframe_size(p: &[u8]) -> Option<(u16, u16)> {
    let i = vp8_payload_header_start(p)?;
    let h = p.get(i..i + 10)?;
    if h[0] & 0x01 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let height = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    Some((width, height))
}

/// VP8 (RFC 7741): the first packet of a keyframe has S=1, PID=0, and P=0 in the
/// payload header that follows the payload descriptor.
fn vp8_is_keyframe_start(p: &[u8]) -> bool {
    vp8_payload_header_start(p).is_some_and(|i| p.get(i).is_some_and(|b| b & 0x01 == 0))
}

/// Where the VP8 payload header starts in the first packet of a frame (S=1, PID=0);
/// `None` for any other packet.
fn vp8_payload_header_start(p: &[u8]) -> Option<usize> {
    let &first = p.first()?;
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    if !start_of_partition || partition_id != 0 {
        return None;
    }
    let mut i = 1;
    if first & 0x80 != 0 {
        // X: extension byte with I, L, T, K flags.
        let &x = p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            // I: picture id, 7 or 15 bits.
            let &pid = p.get(i)?;
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // T or K: TID/KEYIDX
        }
    }
    // The P bit (inverse keyframe flag) is the lowest bit of the byte at `i`.
    (i < p.len()).then_some(i)
}

/// H.264 (RFC 6184): an IDR slice (5) or SPS (7) starts a decodable picture, whether
/// it comes alone, aggregated in STAP-A (24), or as the start of FU-A (28).
fn h264_is_keyframe(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    match first & 0x1f {
        5 | 7 => true,
        24 => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                if matches!(p[i + 2] & 0x1f, 5 | 7) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, 5 | 7)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_detection() {
        // S=1, PID=0, no extension; payload header with P=0.
        assert!(Codec::Vp8.is_keyframe_start(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Interframe: P=1.
        assert!(!Codec::Vp8.is_keyframe_start(&[0x10, 0x01]));
        // Not the start of the partition.
        assert!(!Codec::Vp8.is_keyframe_start(&[0x00, 0x00]));
        // With X, I (15-bit picture id), L, T: descriptor is 5 bytes long.
        assert!(Codec::Vp8.is_keyframe_start(&[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x00]));
        assert!(!Codec::Vp8.is_keyframe_start(&[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x01]));
        assert!(
            !Codec::Vp8.is_keyframe_start(&[0x90]),
            "truncated is not a keyframe"
        );
        assert!(!Codec::Vp8.is_keyframe_start(&[]));
    }

    #[test]
    fn vp8_keyframe_size_is_read_from_the_first_packet() {
        // Descriptor (X, I with 15-bit id), frame tag (keyframe), start code, 640x480.
        let kf = [
            0x90, 0x80, 0x81, 0x23, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01,
        ];
        assert_eq!(Codec::Vp8.keyframe_size(&kf), Some((640, 480)));
        let mut inter = kf;
        inter[4] |= 0x01;
        assert_eq!(Codec::Vp8.keyframe_size(&inter), None);
        assert_eq!(Codec::Vp8.keyframe_size(&kf[..9]), None, "truncated");
        assert_eq!(Codec::H264.keyframe_size(&[0x65]), None);
    }

    #[test]
    fn random_payloads_never_panic_and_sizes_stay_14_bit() {
        let mut rng = rand::rng();
        for _ in 0..200_000 {
            let len = rand::Rng::random_range(&mut rng, 0..24);
            let mut p: Vec<u8> = (0..len).map(|_| rand::Rng::random(&mut rng)).collect();
            if len > 7 && rand::Rng::random_bool(&mut rng, 0.5) {
                p[0] = 0x10; // often a frame start, so the deeper parse runs
                p[2..5].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            }
            for codec in [Codec::Vp8, Codec::H264, Codec::Opus] {
                let _ = codec.is_keyframe_start(&p);
                if let Some((w, h)) = codec.keyframe_size(&p) {
                    assert!(w < 1 << 14 && h < 1 << 14);
                }
            }
        }
    }

    #[test]
    fn vp8_numbering_is_read_and_written_in_place() {
        // X; I with a 15-bit PictureID 0x1234, L with TL0PICIDX 0x56, T; then payload.
        let mut p = [0x90, 0xe0, 0x92, 0x34, 0x56, 0x40, 0x01];
        let n = Vp8Numbering::read(&p).unwrap();
        assert_eq!(
            n,
            Vp8Numbering {
                picture_id: Some(0x1234),
                long_picture_id: true,
                tl0_pic_idx: Some(0x56)
            }
        );
        let renumbered = Vp8Numbering {
            picture_id: Some(0x7abc),
            tl0_pic_idx: Some(0x01),
            ..n
        };
        renumbered.write(&mut p);
        assert_eq!(
            p,
            [0x90, 0xe0, 0xfa, 0xbc, 0x01, 0x40, 0x01],
            "only the two fields change"
        );
        assert_eq!(Vp8Numbering::read(&p), Some(renumbered));
        // A 7-bit PictureID, no TL0PICIDX: written modulo 128.
        let mut short = [0x80, 0x80, 0x05, 0x00];
        let n = Vp8Numbering::read(&short).unwrap();
        assert_eq!(
            (n.picture_id, n.long_picture_id, n.tl0_pic_idx),
            (Some(5), false, None)
        );
        Vp8Numbering {
            picture_id: Some(130),
            ..n
        }
        .write(&mut short);
        assert_eq!(short, [0x80, 0x80, 0x02, 0x00]);
        // No extension byte, or a descriptor cut short: no numbering, nothing written.
        assert_eq!(Vp8Numbering::read(&[0x10, 0x00]), None);
        let mut cut = [0x80, 0xc0, 0x92];
        assert_eq!(Vp8Numbering::read(&cut), None);
        renumbered.write(&mut cut);
        assert_eq!(cut, [0x80, 0xc0, 0x92]);
    }

    #[test]
    fn vp8_numbering_of_random_payloads_never_panics_and_round_trips() {
        let mut rng = rand::rng();
        for _ in 0..100_000 {
            let len = rand::Rng::random_range(&mut rng, 0..8);
            let mut p: Vec<u8> = (0..len).map(|_| rand::Rng::random(&mut rng)).collect();
            let before = p.clone();
            let Some(n) = Vp8Numbering::read(&p) else {
                Vp8Numbering {
                    picture_id: Some(1),
                    long_picture_id: true,
                    tl0_pic_idx: Some(1),
                }
                .write(&mut p);
                assert_eq!(p, before, "nothing to write into");
                continue;
            };
            n.write(&mut p);
            assert_eq!(p, before, "writing what was read changes nothing");
            let other = Vp8Numbering {
                picture_id: n.picture_id.map(|id| id.wrapping_add(1000)),
                tl0_pic_idx: n.tl0_pic_idx.map(|i| i.wrapping_add(7)),
                ..n
            };
            other.write(&mut p);
            let mask = if n.long_picture_id { 0x7fff } else { 0x7f };
            let back = Vp8Numbering::read(&p).unwrap();
            assert_eq!(back.picture_id, other.picture_id.map(|id| id & mask));
            assert_eq!(back.tl0_pic_idx, other.tl0_pic_idx);
            assert_eq!(p.len(), before.len());
        }
    }

    #[test]
    fn h264_keyframe_detection() {
        assert!(Codec::H264.is_keyframe_start(&[0x65, 0x88]));
        assert!(Codec::H264.is_keyframe_start(&[0x67, 0x42]));
        assert!(!Codec::H264.is_keyframe_start(&[0x41, 0x9a]));
        // STAP-A with SPS inside.
        assert!(Codec::H264.is_keyframe_start(&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68]));
        // FU-A start of an IDR, and a middle fragment.
        assert!(Codec::H264.is_keyframe_start(&[0x7c, 0x85, 0x00]));
        assert!(!Codec::H264.is_keyframe_start(&[0x7c, 0x05, 0x00]));
        assert!(
            !Codec::H264.is_keyframe_start(&[0x78, 0xff]),
            "truncated STAP-A"
        );
    }

    #[test]
    fn mime_types_map_case_insensitively() {
        assert_eq!(Codec::from_mime("video/VP8"), Codec::Vp8);
        assert_eq!(Codec::from_mime("audio/opus"), Codec::Opus);
        assert_eq!(Codec::from_mime("video/H264"), Codec::H264);
        assert_eq!(Codec::from_mime("video/AV1"), Codec::Other);
        assert!(Codec::Opus.is_keyframe_start(&[]));
    }
}
