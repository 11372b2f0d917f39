//! A subscriber leg: a bounded queue drained into `write_rtp`, and the keyframe requests
//! the subscriber sends about it. `write_rtp` waits when the subscriber's connection is
//! backed up; only this leg's task waits, and its queue overflows into counted drops in
//! the room actor, so one slow subscriber never stalls the room.

use std::sync::Arc;

use rtc::rtp;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use super::actor::{RoomCommand, RoomHandle};
use super::feedback::is_keyframe_request;
use crate::id::TrackId;
use crate::metrics::Metrics;

/// About half a second of 720p video; audio uses a fraction of it.
pub const LEG_QUEUE: usize = 256;

/// Starts the leg's tasks and returns the queue the room actor feeds.
pub fn open_leg(
    local: Arc<TrackLocalStaticRTP>,
    producer: TrackId,
    room: RoomHandle,
    metrics: Arc<Metrics>,
) -> mpsc::Sender<rtp::Packet> {
    let (tx, mut rx) = mpsc::channel::<rtp::Packet>(LEG_QUEUE);
    let writer = local.clone();
    let write_metrics = metrics.clone();
    tokio::spawn(async move {
        while let Some(packet) = rx.recv().await {
            if writer.write_rtp(packet).await.is_err() {
                Metrics::inc(&write_metrics.rtp_write_errors);
            }
        }
    });
    tokio::spawn(async move {
        while let Some(event) = local.poll().await {
            let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                continue;
            };
            if packets.iter().any(|p| is_keyframe_request(p.as_ref()))
                && !room.send(RoomCommand::KeyframeRequest { track: producer })
            {
                break;
            }
        }
    });
    tx
}
