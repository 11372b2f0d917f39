//! Synthetic media: RTP payloads that carry a counter and a send timestamp, so a receiver
//! can tell delivery and latency, and that start frames the way VP8 and H.264 do, so
//! keyframe-gated logic and keyframe requests behave as with a real encoder.

use std::time::{SystemTime, UNIX_EPOCH};

/// The payload types rtc's default codec list (the synthetic clients' offer) gives VP8
/// and Opus; the senders themselves use whatever their connection negotiated.
pub const VP8_PT: u8 = 96;
pub const OPUS_PT: u8 = 111;

/// Marks a synthetic payload: four bytes after the codec header.
const MAGIC: [u8; 4] = *b"SYRD";
/// Codec header (2) + magic (4) + counter (8) + send time in µs since the epoch (8).
pub const MIN_PAYLOAD: usize = 22;

/// The video codec a synthetic participant publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Video {
    Vp8,
    H264,
}

impl Video {
    pub fn mime(self) -> &'static str {
        match self {
            Video::Vp8 => "video/VP8",
            Video::H264 => "video/H264",
        }
    }

    /// First bytes of a frame's packets: a keyframe start, an interframe start, or a
    /// continuation packet.
    pub fn payload_head(self, first_of_frame: bool, key: bool) -> [u8; 2] {
        match (self, first_of_frame, key) {
            (Video::Vp8, true, true) => [0x10, 0x00],
            (Video::Vp8, true, false) => [0x10, 0x01],
            (Video::Vp8, false, _) => [0x00, 0x00],
            (Video::H264, true, true) => [0x7c, 0x85], // FU-A start of an IDR slice
            (Video::H264, true, false) => [0x7c, 0x81], // FU-A start of a non-IDR slice
            (Video::H264, false, _) => [0x7c, 0x01],   // FU-A continuation
        }
    }
}

/// Wall-clock microseconds: sender and receiver run on the same machine, so the same
/// clock stamps and reads the payloads.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Builds a payload of `size` bytes (at least [`MIN_PAYLOAD`]).
pub fn encode(head: [u8; 2], counter: u64, sent_micros: u64, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size.max(MIN_PAYLOAD)];
    p[..2].copy_from_slice(&head);
    p[2..6].copy_from_slice(&MAGIC);
    p[6..14].copy_from_slice(&counter.to_be_bytes());
    p[14..22].copy_from_slice(&sent_micros.to_be_bytes());
    p
}

/// The counter and send time of a synthetic payload, `None` for anything else.
pub fn decode(payload: &[u8]) -> Option<(u64, u64)> {
    if payload.len() < MIN_PAYLOAD || payload[2..6] != MAGIC {
        return None;
    }
    let counter = u64::from_be_bytes(payload[6..14].try_into().ok()?);
    let sent = u64::from_be_bytes(payload[14..22].try_into().ok()?);
    Some((counter, sent))
}

/// How much a synthetic publisher sends.
#[derive(Clone, Copy, Debug)]
pub struct MediaPlan {
    pub video: Option<Video>,
    pub audio: bool,
    /// Video packets per second (`video_fps` frames/s; the packets of a frame go out
    /// together).
    pub video_pps: u32,
    /// Video frames per second (at most 100; the sans-I/O pool honours it, the async
    /// participant always sends 30).
    pub video_fps: u32,
    /// Audio packets per second (at most 100; 50 is Opus at 20 ms, a few a second is a
    /// muted microphone sending comfort noise). The sans-I/O pool honours it, the async
    /// participant always sends 50.
    pub audio_pps: u32,
    pub video_packet_bytes: usize,
    pub audio_packet_bytes: usize,
    /// A keyframe every this many frames (and whenever one is requested).
    pub keyframe_interval_frames: u64,
    /// Video in three simulcast layers (rids q, h, f) instead of one stream.
    pub simulcast: bool,
}

impl Default for MediaPlan {
    /// 720p-like video, about 1.5 Mbit/s in 1100-byte packets, and Opus-like audio at
    /// 50 packets/s.
    fn default() -> Self {
        MediaPlan {
            video: Some(Video::Vp8),
            audio: true,
            video_pps: 170,
            video_fps: 30,
            audio_pps: 50,
            video_packet_bytes: 1100,
            audio_packet_bytes: 100,
            keyframe_interval_frames: 60,
            simulcast: false,
        }
    }
}

impl MediaPlan {
    pub fn none() -> Self {
        MediaPlan {
            video: None,
            audio: false,
            ..MediaPlan::default()
        }
    }

    /// Packets of each frame per simulcast layer, lowest first (the lowest gets one,
    /// the middle a third of the full layer's); one entry without simulcast.
    pub fn layer_packets_per_frame(&self) -> Vec<u32> {
        let full = self.packets_per_frame();
        if self.simulcast {
            vec![1, full.div_ceil(3), full]
        } else {
            vec![full]
        }
    }

    /// The full layer's part of all video packets sent.
    pub fn full_layer_share(&self) -> f64 {
        let layers = self.layer_packets_per_frame();
        *layers.last().unwrap_or(&1) as f64 / layers.iter().sum::<u32>().max(1) as f64
    }

    /// Packets in each video frame.
    pub fn packets_per_frame(&self) -> u32 {
        self.video_pps.div_ceil(self.video_fps.clamp(1, 100)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let p = encode([0x10, 0x00], 42, 1_700_000_000_000_000, 1100);
        assert_eq!(p.len(), 1100);
        assert_eq!(decode(&p), Some((42, 1_700_000_000_000_000)));
        assert_eq!(encode([0, 0], 1, 2, 3).len(), MIN_PAYLOAD);
        assert_eq!(decode(&[0u8; 40]), None, "not synthetic");
        assert_eq!(decode(&p[..10]), None, "truncated");
    }

    #[test]
    fn synthetic_frames_look_like_real_codecs_to_the_router() {
        use switchyard::room::Codec;
        let key = encode(Video::Vp8.payload_head(true, true), 0, 0, 100);
        let delta = encode(Video::Vp8.payload_head(true, false), 0, 0, 100);
        assert!(Codec::Vp8.is_keyframe_start(&key));
        assert!(!Codec::Vp8.is_keyframe_start(&delta));
        let key = encode(Video::H264.payload_head(true, true), 0, 0, 100);
        let cont = encode(Video::H264.payload_head(false, true), 0, 0, 100);
        assert!(Codec::H264.is_keyframe_start(&key));
        assert!(!Codec::H264.is_keyframe_start(&cont));
    }

    #[test]
    fn default_plan_is_about_one_and_a_half_megabits() {
        let p = MediaPlan::default();
        let bits = p.video_pps as usize * p.video_packet_bytes * 8;
        assert!((1_400_000..1_600_000).contains(&bits), "{bits}");
        assert_eq!(p.packets_per_frame(), 6);
    }
}
