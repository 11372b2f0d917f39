//! A published track: TrackRemote events -> the room's media inbox (try_send, drops
//! counted). The publisher never waits on the room.

use std::sync::Arc;

use tracing::debug;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::actor::{MediaIn, RoomCommand, RoomHandle};
use crate::id::TrackId;
use crate::metrics::Metrics;

pub async fn pump(
    track: Arc<dyn TrackRemote>,
    id: TrackId,
    room: RoomHandle,
    metrics: Arc<Metrics>,
) {
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let sent = room.media.try_send(MediaIn { track: id, packet });
                sent.unwrap_or_else(|_| Metrics::inc(&metrics.rtp_in_dropped));
            }
            TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
            _ => {}
        }
    }
    debug!(track = %id, "published track ended");
    room.send(RoomCommand::Unpublish { track: id });
}
