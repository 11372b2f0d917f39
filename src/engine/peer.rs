//! One participant's connection on a shard: its sans-I/O `RTCPeerConnection`, what it
//! publishes, the subscriber legs it carries, and its negotiation state. The shard drives
//! it; this file only holds the state and the small steps on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use tokio::sync::mpsc;

use super::PeerOutput;
use crate::id::{LegId, ParticipantId, TrackId};
use crate::room::{Negotiator, TrackInfo};

/// A shard's key for a room (rooms are named by strings only at the edges).
pub type RoomKey = u64;

/// A published track, as a subscriber's connection needs it to open a leg.
#[derive(Debug)]
pub struct TrackDesc {
    pub info: TrackInfo,
    pub codec: RTCRtpCodec,
    /// The publisher's header-extension ids and their URIs.
    pub extensions: Vec<(u8, String)>,
    /// Where keyframe requests for this track go.
    pub receiver: RTCRtpReceiverId,
    pub ssrc: u32,
}

/// A track this participant publishes, by rtc's track id (the browser's).
pub struct Published {
    pub track: TrackId,
    /// Only this SSRC is forwarded: further simulcast layers are not routed yet.
    pub ssrc: u32,
}

/// A track this participant receives: one send-only transceiver.
pub struct SubscribedLeg {
    pub leg: LegId,
    pub ssrc: u32,
    pub sender: RTCRtpSenderId,
    pub desc: Arc<TrackDesc>,
}

pub struct Peer {
    pub id: ParticipantId,
    pub room: RoomKey,
    pub pc: RTCPeerConnection,
    pub events: mpsc::Sender<PeerOutput>,
    pub negotiator: Negotiator,
    pub wanted: HashMap<TrackId, Arc<TrackDesc>>,
    pub legs: HashMap<TrackId, SubscribedLeg>,
    pub published: HashMap<String, Published>,
    pub queued_candidates: Vec<RTCIceCandidateInit>,
    pub remote_description_set: bool,
    /// The server offers on its own after this, if the browser has not offered first.
    pub first_offer_deadline: Instant,
    /// The deadline this peer has in the shard's timer heap (stale heap entries differ).
    pub armed: Option<Instant>,
    /// Already on the shard's list of peers to settle and flush this round.
    pub touched: bool,
    /// Set when the shard must remove this participant (and why) at the next chance.
    pub doomed: Option<&'static str>,
}

impl Peer {
    pub fn new(
        id: ParticipantId,
        room: RoomKey,
        pc: RTCPeerConnection,
        events: mpsc::Sender<PeerOutput>,
        first_offer_deadline: Instant,
    ) -> Peer {
        Peer {
            id,
            room,
            pc,
            events,
            negotiator: Negotiator::default(),
            wanted: HashMap::new(),
            legs: HashMap::new(),
            published: HashMap::new(),
            queued_candidates: Vec::new(),
            remote_description_set: false,
            first_offer_deadline,
            armed: None,
            touched: false,
            doomed: None,
        }
    }

    /// Queues an event for this participant's signaling session. A session that lets
    /// its queue fill is not keeping up with its own participant: it is removed, the
    /// shard never waits for it.
    pub fn tell(&mut self, event: PeerOutput) {
        if self.events.try_send(event).is_err() && self.doomed.is_none() {
            self.doomed = Some("signaling fell behind");
        }
    }

    pub fn subscribe(&mut self, desc: Arc<TrackDesc>) {
        let track = desc.info.track_id;
        self.wanted.insert(track, desc);
        self.negotiator.want(track);
    }

    pub fn unsubscribe(&mut self, track: TrackId) {
        self.wanted.remove(&track);
        self.negotiator.unwant(track);
    }
}
