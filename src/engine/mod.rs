//! The media engine: the only code that names rtc types and owns media sockets.
//!
//! A shard is one OS thread that owns one UDP socket, the rooms placed on it (their pure
//! [`crate::room::Room`] cores), the sans-I/O peer connection of every participant in
//! those rooms, and one timer heap. A room lives on one shard, so a packet is received,
//! routed and sent again on one thread with no lock and no channel on its way. Signaling
//! talks to a shard only by message ([`Command`] in, [`PeerOutput`] out).
//! docs/ARCHITECTURE.md has the threading and the packet path.

pub mod admin;
pub mod build;
mod chat;
mod control;
pub mod demux;
mod downlink;
pub mod extensions;
pub mod feedback;
#[cfg(test)]
mod fuzz_tests;
mod held;
#[cfg(test)]
mod late_resend_tests;
mod legs;
mod negotiate;
pub mod peer;
pub mod retransmit;
pub mod rewrite;
mod routing;
pub mod shard;
pub mod sim;
pub mod tcp;
pub mod udp;
pub mod uplink;

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::MediaConfig;
use crate::error::SignalError;
use crate::id::{MediaKind, ParticipantId};
use crate::metrics::Metrics;
use crate::room::{JoinSnapshot, NegotiationError, ParticipantInfo, RoomEvent};

pub use rtc::peer_connection::transport::RTCIceCandidateInit as IceCandidate;

/// Commands a shard takes at most this many of before it looks at its socket again.
const COMMAND_QUEUE: usize = 1024;
/// Events queued for one participant's signaling; a session this far behind is dropped.
pub const SESSION_QUEUE: usize = 1024;

/// What signaling asks of a shard.
pub enum Command {
    Join {
        id: ParticipantId,
        room: String,
        name: String,
        /// What the participant's token allows (everything in dev mode).
        grants: crate::auth::Grants,
        events: mpsc::Sender<PeerOutput>,
        reply: oneshot::Sender<Result<JoinSnapshot, SignalError>>,
    },
    Offer {
        id: ParticipantId,
        sdp: String,
        /// mid -> source for what the offer publishes besides camera and microphone.
        sources: std::collections::HashMap<String, crate::auth::Source>,
    },
    Answer {
        id: ParticipantId,
        sdp: String,
    },
    Candidate {
        id: ParticipantId,
        candidate: IceCandidate,
    },
    Mute {
        id: ParticipantId,
        kind: MediaKind,
        muted: bool,
    },
    View {
        id: ParticipantId,
        track: crate::id::TrackId,
        view: crate::room::View,
    },
    Leave {
        id: ParticipantId,
    },
    Rooms {
        reply: oneshot::Sender<Vec<RoomSummary>>,
    },
    Admin {
        room: String,
        op: admin::AdminOp,
        reply: oneshot::Sender<admin::AdminReply>,
    },
    /// Facts for tests and operators: the shard's sockets and connections.
    Inspect {
        reply: oneshot::Sender<ShardInfo>,
    },
}

/// What a shard tells one participant's signaling session.
#[derive(Debug)]
pub enum PeerOutput {
    Room(RoomEvent),
    Offer(String),
    Answer(String),
    /// Dynacast: keep these layers (rids) of the track in m-section `mid`, pause the rest.
    Layers {
        mid: String,
        active: Vec<String>,
    },
    Error(EngineError),
    /// The participant is gone from the shard (media failed, or removed); close signaling.
    Closed(&'static str),
    /// An administrator removed the participant (or closed the room): tell the client
    /// why, so it does not reconnect, then close.
    Removed(&'static str),
    /// The room moves to another node (this one drains): the client joins there.
    Moved {
        node: String,
        url: String,
    },
    /// Room notifications to this participant were dropped (its signaling fell
    /// behind): here is the room as it is now, to start over from.
    Resync(crate::room::JoinSnapshot),
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid SDP: {0}")]
    BadSdp(String),
    #[error(transparent)]
    Negotiation(#[from] NegotiationError),
    #[error("invalid ICE candidate: {0}")]
    BadCandidate(String),
    /// The participant's grants do not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// A chat message (or a data channel) refused; the room carries on.
    #[error("{0}")]
    Chat(String),
    #[error("{0}")]
    Internal(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct RoomSummary {
    pub name: String,
    pub participants: Vec<ParticipantInfo>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShardInfo {
    pub udp_addr: SocketAddr,
    pub peers: usize,
    pub demux_addresses: usize,
    pub max_gso_segments: usize,
    /// The SRTP profile each connected peer negotiated, by participant.
    pub srtp: Vec<(ParticipantId, String)>,
    /// Each participant's downlink: estimate, allocation and the layer of every leg.
    pub downlinks: Vec<DownlinkInfo>,
    /// Each published track's simulcast layers as the server receives them.
    pub publications: Vec<PublicationInfo>,
    /// What became of the packets its rooms were given, by cause.
    pub rtp: crate::room::RoomRtpCounts,
}

#[derive(Clone, Debug, Serialize)]
pub struct DownlinkInfo {
    pub participant_id: ParticipantId,
    pub estimate_bps: Option<u64>,
    pub wanted_bps: u64,
    pub allocated_bps: u64,
    pub probes: u64,
    pub twcc_feedbacks: u64,
    /// The share of packets the subscriber reported lost over the last second.
    pub loss: f64,
    /// The part of that loss the path has whatever is sent (not congestion).
    pub inherent_loss: f64,
    /// The inherent loss over seconds: above 8 % it limits the allocation.
    pub settled_loss: f64,
    /// Send-only m-sections on its connection: carrying a track, and spare.
    pub send_sections: (usize, usize),
    /// Packets the server's transport-cc feedback to this participant reported
    /// (received, lost) so far: what its browser's own uplink estimate is fed.
    pub uplink_feedback: (u64, u64),
    /// Simulcast layer switches on its legs so far.
    pub layer_switches: u64,
    /// (track, layer being forwarded, layer chosen)
    pub legs: Vec<(crate::id::TrackId, Option<usize>, Option<usize>)>,
    /// Each leg's packets: offered, forwarded, dropped by cause.
    pub leg_counts: Vec<(crate::id::TrackId, crate::room::LegCounts)>,
}

/// One simulcast layer as the server receives it: (rid, bits per second now, picture
/// size from its last keyframe, whether the publisher was told to send it).
pub type LayerInfo = (String, u64, Option<(u16, u16)>, bool);

#[derive(Clone, Debug, Serialize)]
pub struct PublicationInfo {
    pub track_id: crate::id::TrackId,
    pub participant_id: ParticipantId,
    pub layers: Vec<LayerInfo>,
}

/// How signaling reaches one shard.
#[derive(Clone)]
pub struct ShardHandle {
    commands: mpsc::Sender<Command>,
}

impl ShardHandle {
    /// Waits while the shard's queue is full (signaling may wait; media never does).
    /// False when the shard has stopped.
    pub async fn send(&self, cmd: Command) -> bool {
        self.commands.send(cmd).await.is_ok()
    }
}

/// Process-wide id sources, so ids never repeat across rooms or shards.
#[derive(Default)]
pub struct Ids {
    tracks: AtomicU64,
    legs: AtomicU64,
    participants: AtomicU64,
}

impl Ids {
    pub fn participant(&self) -> ParticipantId {
        ParticipantId(self.participants.fetch_add(1, Ordering::Relaxed) + 1)
    }
    pub fn track(&self) -> crate::id::TrackId {
        crate::id::TrackId(self.tracks.fetch_add(1, Ordering::Relaxed) + 1)
    }
    pub fn leg(&self) -> crate::id::LegId {
        crate::id::LegId(self.legs.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// All shards of this server.
pub struct Engine {
    shards: Vec<ShardHandle>,
    /// Each shard's bound media socket.
    pub media_addrs: Vec<SocketAddr>,
    pub ids: Arc<Ids>,
    pub metrics: Arc<Metrics>,
}

impl Engine {
    /// Binds every shard's socket and starts its thread.
    pub fn start(
        media: &MediaConfig,
        max_participants: usize,
        metrics: Arc<Metrics>,
        webhooks: crate::webhook::WebhookSink,
    ) -> std::io::Result<Engine> {
        let ids = Arc::new(Ids::default());
        let mut shards = Vec::new();
        let mut media_addrs = Vec::new();
        for index in 0..media.shards.max(1) {
            let port = if media.udp_port == 0 {
                0
            } else {
                media.udp_port + index as u16
            };
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            let settings = shard::ShardSettings {
                index,
                bind: SocketAddr::new(media.bind_ip(), port),
                advertise: media.advertise_ip(),
                srtp: media.srtp,
                bwe: media.bwe,
                max_participants,
                ice_connect_timeout: media.ice_connect_timeout,
                webhooks: webhooks.clone(),
                ice_tcp: media.ice_tcp,
            };
            media_addrs.push(shard::spawn(settings, rx, ids.clone(), metrics.clone())?);
            shards.push(ShardHandle { commands: tx });
        }
        Ok(Engine {
            shards,
            media_addrs,
            ids,
            metrics,
        })
    }

    /// The shard a room lives on: rooms are spread by name, so every participant of
    /// one room meets on one shard.
    pub fn shard_for(&self, room: &str) -> &ShardHandle {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut h);
        &self.shards[(h.finish() % self.shards.len() as u64) as usize]
    }

    /// Every room on every shard, sorted by name.
    pub async fn rooms(&self) -> Vec<RoomSummary> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            if !shard.send(Command::Rooms { reply: tx }).await {
                continue;
            }
            if let Ok(Ok(rooms)) = tokio::time::timeout(Duration::from_secs(2), rx).await {
                out.extend(rooms);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Carries out an administrator's `op` on `room`, on the room's shard.
    pub async fn admin(&self, room: &str, op: admin::AdminOp) -> admin::AdminReply {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Admin {
            room: room.to_string(),
            op,
            reply: tx,
        };
        if !self.shard_for(room).send(cmd).await {
            return Err(admin::AdminError::Unavailable);
        }
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .map_err(|_| admin::AdminError::Unavailable)?
            .map_err(|_| admin::AdminError::Unavailable)?
    }

    pub async fn inspect(&self) -> Vec<ShardInfo> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            if shard.send(Command::Inspect { reply: tx }).await {
                if let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(2), rx).await {
                    out.push(info);
                }
            }
        }
        out
    }
}
