//! The tests' participants: the library's synthetic participants, publishing a camera
//! (VP8 unless told otherwise) and a microphone.

use switchyard_synthetic::{MediaPlan, SyntheticParticipant};
#[allow(unused_imports)] // each test crate uses a different part
pub use switchyard_synthetic::{Video, OPUS_PT, VP8_PT};

pub type Client = SyntheticParticipant;

/// Joins and publishes VP8 video and Opus audio at test rates (a few hundred kbit/s).
pub async fn join(ws_url: &str, room: &str, name: &str) -> Client {
    join_with(ws_url, room, name, Video::Vp8).await
}

pub async fn join_with(ws_url: &str, room: &str, name: &str, codec: Video) -> Client {
    let media = MediaPlan {
        video: Some(codec),
        video_pps: 90,
        video_packet_bytes: 1000,
        ..MediaPlan::default()
    };
    SyntheticParticipant::join(ws_url, room, name, media)
        .await
        .unwrap_or_else(|e| panic!("{name} cannot join {room}: {e}"))
}

/// Joins with an access token (room and name are the token's), publishing as `join` does.
pub async fn join_token(ws_url: &str, token: &str) -> Client {
    let media = MediaPlan {
        video: Some(Video::Vp8),
        video_pps: 90,
        video_packet_bytes: 1000,
        ..MediaPlan::default()
    };
    SyntheticParticipant::join_with_token(ws_url, token, media)
        .await
        .unwrap_or_else(|e| panic!("cannot join with a token: {e}"))
}
