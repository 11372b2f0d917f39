//! The shard's control plane: signaling commands (join, offer, answer, candidates,
//! mute, leave), removing participants, and the server's offers.

use std::time::Instant;

use rtc::sansio::Protocol;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::build::server_peer;
use super::peer::Peer;
use super::retransmit::RetransmitLimits;
use super::routing::RoomHost;
use super::shard::{touch, Shard, FIRST_OFFER_WAIT};
use super::uplink::UplinkFeedback;
use super::{Command, EngineError, PeerOutput, RoomSummary, ShardInfo};
use crate::auth::Grants;
use crate::error::SignalError;
use crate::id::ParticipantId;
use crate::metrics::Metrics;
use crate::room::{JoinSnapshot, LegStart};
use crate::webhook::{EventKind, WebhookEvent};

impl Shard {
    pub(super) fn command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Join {
                id,
                room,
                name,
                grants,
                events,
                reply,
            } => {
                self.join(id, room, name, grants, events, reply, now);
                // At once, not at the next housekeeping: a node's participant limit
                // (and a cluster's placement) reads this for the very next join.
                self.publish_counts();
            }
            Command::Offer { id, sdp, sources } => {
                let metrics = self.metrics.clone();
                let mut stopped = Vec::new();
                self.on_peer(id, now, |peer| match peer.client_offer(sdp, sources, now) {
                    Ok(Some(answer)) => {
                        peer.tell(PeerOutput::Answer(answer));
                        stopped = peer.stopped_publications();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        Metrics::inc(&metrics.offers_refused);
                        peer.tell(PeerOutput::Error(e))
                    }
                });
                for track in stopped {
                    self.unpublish(id, &track, now);
                }
            }
            Command::Answer { id, sdp } => self.answer(id, sdp, now),
            Command::Candidate { id, candidate } => {
                let metrics = self.metrics.clone();
                self.on_peer(id, now, |peer| {
                    if let Err(e) = peer.add_candidate(candidate) {
                        Metrics::inc(&metrics.candidates_refused);
                        peer.tell(PeerOutput::Error(e));
                    }
                })
            }
            Command::Mute { id, kind, muted } => {
                if let Some(key) = self.peers.get(&id).map(|p| p.room) {
                    if let Some(host) = self.rooms.get_mut(&key) {
                        host.room.set_muted(id, kind, muted);
                    }
                    self.drain_room_outputs(key, now);
                }
            }
            Command::View { id, track, view } => {
                if let Some(key) = self.peers.get(&id).map(|p| p.room) {
                    if let Some(host) = self.rooms.get_mut(&key) {
                        host.room.set_view(id, track, view, now);
                    }
                    self.drain_room_outputs(key, now);
                }
            }
            Command::Leave { id } => self.remove_participant(id, "left", now),
            Command::Rooms { reply } => {
                let rooms = self
                    .rooms
                    .values()
                    .map(|h| RoomSummary {
                        name: h.name.clone(),
                        participants: h.room.participants().cloned().collect(),
                    })
                    .collect();
                let _ = reply.send(rooms);
            }
            Command::Admin { room, op, reply } => {
                let _ = reply.send(self.admin(&room, op, now));
            }
            Command::Inspect { reply } => {
                let info = ShardInfo {
                    udp_addr: self.candidate,
                    peers: self.peers.len(),
                    demux_addresses: self.demux.addresses(),
                    max_gso_segments: self.udp.max_gso_segments(),
                    srtp: self.srtp_ciphers(now),
                    downlinks: self.downlink_infos(),
                    publications: self.publication_infos(now),
                    rtp: self.rtp_counts(),
                };
                let _ = reply.send(info);
            }
        }
    }

    /// Runs `f` on a participant's connection, then makes the next offer if one is due.
    fn on_peer(&mut self, id: ParticipantId, now: Instant, f: impl FnOnce(&mut Peer)) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return; // left meanwhile
        };
        f(peer);
        touch(&mut self.touched, peer);
        self.offer_if_due(id, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        id: ParticipantId,
        room: String,
        name: String,
        grants: Grants,
        events: mpsc::Sender<PeerOutput>,
        reply: oneshot::Sender<Result<JoinSnapshot, SignalError>>,
        now: Instant,
    ) {
        let key = self.open_room(&room);
        let retransmit_limits = RetransmitLimits::default();
        let uplink_feedback = UplinkFeedback::default();
        let result = server_peer(
            self.candidate,
            self.tcp.is_some(),
            self.settings.srtp,
            self.metrics.clone(),
            retransmit_limits.clone(),
            uplink_feedback.clone(),
            now,
        )
        .map_err(|e| {
            SignalError::Engine(EngineError::Internal(format!(
                "cannot open a media connection: {e}"
            )))
        })
        .and_then(|pc| {
            let host = self.rooms.get_mut(&key).expect("room created above");
            let snapshot = host.room.join_as(id, &name, grants.can_subscribe)?;
            host.empty_since = None;
            Ok((pc, snapshot))
        });
        match result {
            Ok((pc, snapshot)) => {
                let mut peer = Peer::new(id, key, pc, events, now + FIRST_OFFER_WAIT);
                peer.downlink.retransmit_limits = retransmit_limits;
                peer.uplink_feedback = uplink_feedback;
                peer.grants = grants;
                peer.joined_at = now;
                touch(&mut self.touched, &mut peer);
                self.peers.insert(id, peer);
                info!(participant = %id, room = %room, name = %name, "joined");
                self.settings.webhooks.emit(WebhookEvent::participant(
                    EventKind::ParticipantJoined,
                    &room,
                    id,
                    &name,
                ));
                let _ = reply.send(Ok(snapshot));
                self.drain_room_outputs(key, now);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                self.close_room_if_empty(key, now);
            }
        }
    }

    fn answer(&mut self, id: ParticipantId, sdp: String, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let ready = match peer.client_answer(sdp, now) {
            Ok(ready) => ready,
            Err(e) => {
                peer.tell(PeerOutput::Error(e));
                // The failed offer was rolled back: offer afresh what is still wanted.
                self.offer_if_due(id, now);
                return;
            }
        };
        if !self.settings.bwe {
            peer.downlink.twcc_ext_id = None; // nothing stamped, no estimate, no limit
        }
        touch(&mut self.touched, peer);
        let key = peer.room;
        if let Some(host) = self.rooms.get_mut(&key) {
            for leg in ready {
                host.legs.insert(leg.leg, id);
                let base = leg
                    .base
                    .unwrap_or_else(|| LegStart::fresh(rand::random(), rand::random()));
                host.room
                    .consumer_ready(leg.leg, id, leg.track, leg.params, base, now);
            }
        }
        self.drain_room_outputs(key, now);
        self.offer_if_due(id, now);
    }

    /// Makes the participant's next server offer, if the room changed what it receives.
    pub(super) fn offer_if_due(&mut self, id: ParticipantId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match peer.next_offer(&self.ids, now) {
            Ok(None) => {}
            Ok(Some((sdp, closed))) => {
                peer.tell(PeerOutput::Offer(sdp));
                // Flushed this round: the demux must know its ufrag before the browser's
                // first connectivity check, which may come before its answer.
                touch(&mut self.touched, peer);
                let key = peer.room;
                if let Some(host) = self.rooms.get_mut(&key) {
                    for leg in closed {
                        host.room.consumer_closed(leg);
                    }
                }
                self.drain_room_outputs(key, now);
            }
            Err(e) => {
                warn!(participant = %id, "cannot make an offer: {e}");
                peer.tell(PeerOutput::Error(e));
            }
        }
    }

    /// Takes a participant out of its room and the shard, and tells its session.
    pub(super) fn remove_participant(
        &mut self,
        id: ParticipantId,
        why: &'static str,
        now: Instant,
    ) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        self.demux.remove(id);
        if let Some(tcp) = self.tcp.as_mut() {
            tcp.forget(id);
        }
        let _ = peer.pc.close();
        let _ = peer.events.try_send(PeerOutput::Closed(why));
        let key = peer.room;
        if let Some(host) = self.rooms.get_mut(&key) {
            // Its tracks go with it (rtc reports no track closing for a closed connection).
            let tracks: Vec<_> = host
                .tracks
                .values()
                .filter(|d| d.info.participant_id == id)
                .map(|d| d.info.clone())
                .collect();
            for t in tracks {
                host.tracks.remove(&t.track_id);
                let event = WebhookEvent::for_track(EventKind::TrackUnpublished, &host.name, &t);
                self.settings.webhooks.emit(event);
            }
            if let Some(p) = host.room.participant(id) {
                let event =
                    WebhookEvent::participant(EventKind::ParticipantLeft, &host.name, id, &p.name);
                self.settings.webhooks.emit(event);
            }
            host.room.leave(id);
            host.chat.forget(id);
        }
        self.drain_room_outputs(key, now);
        self.close_room_if_empty(key, now);
        debug!(participant = %id, "removed: {why}");
    }

    /// An empty room closes, unless an administrator gave it an empty timeout: then it
    /// waits that long (`close_expired_rooms`).
    fn close_room_if_empty(&mut self, key: crate::engine::peer::RoomKey, now: Instant) {
        let Some(host) = self.rooms.get_mut(&key).filter(|h| h.room.is_empty()) else {
            return;
        };
        if host.empty_timeout.is_some() {
            host.empty_since.get_or_insert(now);
            return;
        }
        self.finish_room(key);
    }

    /// The room called `name` on this shard, opened (and announced) if it was not.
    pub(super) fn open_room(&mut self, name: &str) -> crate::engine::peer::RoomKey {
        if let Some(key) = self.room_keys.get(name) {
            return *key;
        }
        let key = self.next_room_key();
        self.room_keys.insert(name.to_string(), key);
        let host = RoomHost::new(name.to_string(), self.settings.max_participants);
        self.rooms.insert(key, host);
        self.settings
            .webhooks
            .emit(WebhookEvent::room(EventKind::RoomStarted, name));
        key
    }

    /// What became of the packets this shard's rooms were given, finished rooms included.
    fn rtp_counts(&self) -> crate::room::RoomRtpCounts {
        let mut counts = self.finished_rooms_rtp;
        for host in self.rooms.values() {
            counts.add(&host.room.rtp_counts());
        }
        counts
    }

    /// Removes a room (empty by now) and says so.
    pub(super) fn finish_room(&mut self, key: crate::engine::peer::RoomKey) {
        if let Some(host) = self.rooms.remove(&key) {
            self.room_keys.remove(&host.name);
            self.finished_rooms_rtp.add(&host.room.rtp_counts());
            self.settings
                .webhooks
                .emit(WebhookEvent::room(EventKind::RoomFinished, &host.name));
        }
    }
}
