//! Giving a forwarded packet the header its subscriber leg negotiated: SSRC, sequence
//! number, timestamp, payload type and header-extension ids (the pure decision is
//! [`crate::room::RewrittenHeader`]; this applies it to an rtc packet).

use rtc::rtp;

use crate::room::RewrittenHeader;

/// Gives a packet the header its subscriber leg negotiated.
pub fn apply_rewrite(h: &mut rtp::header::Header, r: &RewrittenHeader) {
    h.ssrc = r.ssrc;
    h.sequence_number = r.sequence_number;
    h.timestamp = r.timestamp;
    h.payload_type = r.payload_type;
    if h.extension {
        h.extensions.retain_mut(|e| match r.ext_map.get(e.id) {
            Some(id) => {
                e.id = id;
                true
            }
            None => false,
        });
        // The parsed padding belonged to the publisher's extension block; rtc sizes the
        // packet with it, so a stale value makes SRTP refuse the packet (marshal size
        // mismatch). The block is padded to 4 bytes on marshal anyway.
        h.extensions_padding = 0;
        if h.extensions.is_empty() {
            h.extension = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::ExtMap;
    use rtc::rtp::header::Extension;
    use rtc::shared::marshal::MarshalSize;

    #[test]
    fn rewrite_sets_leg_fields_and_maps_or_strips_extensions() {
        let mut h = rtp::header::Header {
            version: 2,
            extension: true,
            extension_profile: 0xBEDE,
            payload_type: 96,
            sequence_number: 7,
            timestamp: 9,
            ssrc: 1,
            extensions: vec![
                Extension {
                    id: 1,
                    payload: bytes::Bytes::from_static(&[0x80]),
                },
                Extension {
                    id: 3,
                    payload: bytes::Bytes::from_static(&[1, 2, 3]),
                },
            ],
            ..Default::default()
        };
        let mut map = [0u8; 16];
        map[1] = 5; // audio level: 1 on the publisher, 5 on this leg; id 3 not negotiated
        let r = RewrittenHeader {
            ssrc: 42,
            sequence_number: 100,
            timestamp: 200,
            payload_type: 111,
            ext_map: ExtMap(map),
            vp8: None,
        };
        h.extensions_padding = 3; // as parsed from a publisher's block with more extensions
        apply_rewrite(&mut h, &r);
        assert_eq!(
            h.marshal_size(),
            12 + 4 + 4,
            "one 1-byte extension: a 4-byte block, no stale padding"
        );
        assert_eq!(
            (h.ssrc, h.sequence_number, h.timestamp, h.payload_type),
            (42, 100, 200, 111)
        );
        assert_eq!(h.extensions.len(), 1);
        assert_eq!(h.extensions[0].id, 5);
        apply_rewrite(
            &mut h,
            &RewrittenHeader {
                ext_map: ExtMap::default(),
                ..r
            },
        );
        assert!(!h.extension, "no extension left, no extension block");
    }
}
