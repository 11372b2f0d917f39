//! One participant's connection on a shard: its sans-I/O `RTCPeerConnection`, what it
//! publishes, the subscriber legs it carries, and its negotiation state. The shard drives
//! it; this file only holds the state and the small steps on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rtc::data_channel::RTCDataChannelId;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiver};
use tokio::sync::mpsc;

use super::downlink::DownlinkState;
use super::PeerOutput;
use crate::auth::Source;
use crate::id::{LegId, MediaKind, ParticipantId, TrackId};
use crate::room::{LegStart, Negotiator, TrackInfo};

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
}

/// A track this participant publishes, by rtc's track id (the browser's).
pub struct Published {
    pub track: TrackId,
    /// Camera, microphone or screen.
    pub source: Source,
    /// The m-section it arrives in: how dynacast names it to the client.
    pub mid: String,
    /// Each simulcast layer's rid, lowest first (one empty rid without simulcast).
    pub rids: Vec<String>,
    /// (SSRC, layer) of every layer seen so far.
    pub ssrcs: Vec<(u32, usize)>,
    /// The publisher's id for the audio-level extension (active speaker detection).
    pub audio_level_id: Option<u8>,
    /// The publisher's extension ids that may be forwarded at all (see
    /// `room::rewrite::FORWARDED_EXTENSIONS`): the rest are dropped once, at ingress,
    /// so the per-leg copies do not carry (and allocate for) them.
    pub forwardable_extensions: ExtensionMask,
}

/// A set of one-byte/two-byte header extension ids (0..=255).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtensionMask([u64; 4]);

impl ExtensionMask {
    pub fn of(ids: impl IntoIterator<Item = u8>) -> ExtensionMask {
        let mut m = ExtensionMask::default();
        for id in ids {
            m.0[id as usize / 64] |= 1 << (id % 64);
        }
        m
    }

    pub fn contains(&self, id: u8) -> bool {
        self.0[id as usize / 64] & (1 << (id % 64)) != 0
    }

    /// Keeps only the extensions in the mask.
    pub fn filter(&self, h: &mut rtc::rtp::header::Header) {
        if !h.extension {
            return;
        }
        h.extensions.retain(|e| self.contains(e.id));
        // The parsed padding belonged to the full block; see engine::rewrite.
        h.extensions_padding = 0;
        if h.extensions.is_empty() {
            h.extension = false;
        }
    }
}

/// Where a track comes from: what the client `named` for its m-section, when that fits
/// the track's kind (a screen is video), else its camera or microphone.
pub fn source_of(named: Option<Source>, kind: MediaKind) -> Source {
    match (named, kind) {
        (Some(s @ (Source::Screen | Source::Camera)), MediaKind::Video) => s,
        _ => Source::of(kind),
    }
}

/// A track this participant receives: one send-only transceiver.
pub struct SubscribedLeg {
    pub leg: LegId,
    pub ssrc: u32,
    pub sender: RTCRtpSenderId,
    pub desc: Arc<TrackDesc>,
    /// Where its numbering starts: after the previous leg on a reused SSRC, else random.
    pub base: Option<LegStart>,
    /// Where a later leg on its SSRC continues, once the room has closed it.
    pub resume: Option<LegStart>,
}

/// Places in a session's queue kept for what cannot be dropped (see [`Peer::tell`]).
pub const NOTIFY_RESERVE: usize = 64;

pub struct Peer {
    pub id: ParticipantId,
    pub room: RoomKey,
    pub pc: RTCPeerConnection,
    pub events: mpsc::Sender<PeerOutput>,
    pub negotiator: Negotiator,
    pub wanted: HashMap<TrackId, Arc<TrackDesc>>,
    pub legs: HashMap<TrackId, SubscribedLeg>,
    /// Send-only m-sections whose track is gone, waiting for the next one like it.
    pub spares: Vec<super::legs::SpareSender>,
    pub published: HashMap<String, Published>,
    pub queued_candidates: Vec<RTCIceCandidateInit>,
    pub remote_description_set: bool,
    /// Candidates added since the client's last description: capped (negotiate.rs).
    pub remote_candidates: usize,
    /// The server offers on its own after this, if the browser has not offered first.
    pub first_offer_deadline: Instant,
    /// When it joined, and whether its media connection has ever connected: one that
    /// never does is removed after the ICE-connect timeout.
    pub joined_at: Instant,
    pub connected_once: bool,
    /// The deadline this peer has in the shard's timer heap (stale heap entries differ).
    pub armed: Option<Instant>,
    /// Already on the shard's list of peers to settle and flush this round.
    pub touched: bool,
    /// Set when the shard must remove this participant (and why) at the next chance.
    pub doomed: Option<&'static str>,
    /// Room notifications were dropped for it: a resync is due once its queue drains.
    pub resync_due: bool,
    /// Transport-cc stamping and the bandwidth estimate of what the server sends it.
    pub downlink: DownlinkState,
    /// What the server's transport-cc feedback has told this participant of its uplink.
    pub uplink_feedback: super::uplink::UplinkFeedback,
    /// What the participant's token allows.
    pub grants: crate::auth::Grants,
    /// Tracks refused for want of a publish grant (each is refused, and told, once).
    pub refused_tracks: std::collections::HashSet<String>,
    /// What the client's last offer said its m-sections (by mid) carry; a track of a
    /// mid not named here is its camera or microphone.
    pub sources: HashMap<String, Source>,
    /// Its open "chat" data channel, once the browser has opened one.
    pub chat_channel: Option<RTCDataChannelId>,
    /// The ICE ufrag the demux knows this connection by (it changes with an ICE restart).
    pub ufrag: Option<String>,
    /// A local description was set since the last look at its ufrag.
    pub local_description_changed: bool,
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
            spares: Vec::new(),
            published: HashMap::new(),
            queued_candidates: Vec::new(),
            remote_description_set: false,
            remote_candidates: 0,
            first_offer_deadline,
            joined_at: Instant::now(),
            connected_once: false,
            armed: None,
            touched: false,
            doomed: None,
            resync_due: false,
            downlink: DownlinkState::default(),
            uplink_feedback: Default::default(),
            grants: crate::auth::Grants::default(),
            refused_tracks: std::collections::HashSet::new(),
            sources: HashMap::new(),
            chat_channel: None,
            ufrag: None,
            local_description_changed: false,
        }
    }

    /// Queues an event for this participant's signaling session; the shard never waits
    /// for it. Room notifications (who joined, muted, published) are what others'
    /// behaviour can flood a queue with, and they can be recovered: when the queue is
    /// down to its last [`NOTIFY_RESERVE`] places they are dropped (counted) and a
    /// resync is due instead. The reserve keeps room for what cannot be recovered
    /// (offers, answers, errors); a session that lets even that fill is not keeping up
    /// with its own participant and is removed.
    pub fn tell(&mut self, event: PeerOutput) {
        self.queue(event);
    }

    /// A room notification, dropped when the queue is down to its reserve (see
    /// [`Peer::tell`]). True: queued.
    pub fn notify(&mut self, event: crate::room::RoomEvent) -> bool {
        if self.events.capacity() <= NOTIFY_RESERVE {
            self.resync_due = true;
            return false;
        }
        self.queue(PeerOutput::Room(event))
    }

    fn queue(&mut self, event: PeerOutput) -> bool {
        if self.events.try_send(event).is_err() {
            if self.doomed.is_none() {
                self.doomed = Some("signaling fell behind");
            }
            return false;
        }
        true
    }

    /// The resync, once its queue has drained to half: the room as it is now.
    pub fn resync_if_due(&mut self, room: &crate::room::Room) -> bool {
        if !self.resync_due || self.events.capacity() < self.events.max_capacity() / 2 {
            return false;
        }
        self.resync_due = false;
        self.queue(PeerOutput::Resync(room.snapshot_for(self.id)))
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

    /// What `read` finds in each of the connection's transceivers (rtc lends one at a
    /// time, by id).
    pub fn read_transceivers<T>(
        &mut self,
        mut read: impl FnMut(&RTCRtpTransceiver<'_>) -> Option<T>,
    ) -> Vec<T> {
        let ids: Vec<_> = self.pc.get_transceivers().collect();
        ids.into_iter()
            .filter_map(|id| read(&self.pc.rtp_transceiver(id)?))
            .collect()
    }

    /// The ICE ufrag of the current local description, when it differs from the one
    /// the demux knows (the first description, or an ICE restart).
    pub fn new_local_ufrag(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.local_description_changed) {
            return None;
        }
        let sdp = self.pc.local_description()?.sdp;
        let ufrag = sdp
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))?
            .trim()
            .to_string();
        (self.ufrag.as_deref() != Some(&ufrag)).then_some(ufrag)
    }

    /// The published track that carries `track`, by the room's id.
    pub fn publication(&self, track: TrackId) -> Option<&Published> {
        self.published.values().find(|p| p.track == track)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::rtp::header::{Extension, Header};

    #[test]
    fn the_ingress_mask_keeps_only_forwardable_extensions() {
        let mask = ExtensionMask::of([1, 200]);
        assert!(mask.contains(1) && mask.contains(200) && !mask.contains(3));
        let ext = |id| Extension {
            id,
            payload: Bytes::from_static(&[0]),
        };
        let mut h = Header {
            extension: true,
            extensions: vec![ext(1), ext(3), ext(4)],
            extensions_padding: 3,
            ..Default::default()
        };
        mask.filter(&mut h);
        assert_eq!(h.extensions.len(), 1);
        assert_eq!((h.extension, h.extensions_padding), (true, 0));
        ExtensionMask::default().filter(&mut h);
        assert!(!h.extension && h.extensions.is_empty());
    }
}
