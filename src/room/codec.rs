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
