//! The room: who is here, what they publish, who receives what, and the forwarding
//! table. Pure: no I/O, no clock (time is an argument), no webrtc types. The shard that
//! hosts the room owns it (see `engine::routing`). Layer allocation, dynacast and the
//! active speaker run on its timer (`downlink.rs`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::allocator::{Budget, View};
use super::codec::Codec;
use super::consumer::{Consumer, LegCounts, LegParams, LegStart};
use super::participant::ParticipantInfo;
use super::producer::{Producer, MAX_LAYERS};
use super::rewrite::RewrittenHeader;
use super::speaker::SpeakerDetector;
use crate::auth::Source;
use crate::id::{LegId, MediaKind, ParticipantId, TrackId};

/// A published track as the participants see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrackInfo {
    pub track_id: TrackId,
    pub participant_id: ParticipantId,
    pub kind: MediaKind,
    /// Camera, microphone or screen: how clients show it.
    pub source: Source,
}

/// Something a participant must be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomEvent {
    ParticipantJoined(ParticipantInfo),
    ParticipantLeft(ParticipantId),
    TrackPublished(TrackInfo),
    TrackUnpublished {
        track_id: TrackId,
        participant_id: ParticipantId,
    },
    Mute {
        participant_id: ParticipantId,
        kind: MediaKind,
        muted: bool,
    },
    /// Who is speaking now, the dominant speaker first (empty: nobody).
    Speakers(Vec<ParticipantId>),
}

/// What the room asks of the world around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Notify {
        to: ParticipantId,
        event: RoomEvent,
    },
    /// `subscriber` should now receive `track` (the session renegotiates).
    Subscribe {
        subscriber: ParticipantId,
        track: TrackInfo,
    },
    /// `subscriber` should stop receiving `track`.
    Unsubscribe {
        subscriber: ParticipantId,
        track: TrackId,
    },
    /// Ask the publisher of `track` for a keyframe of one layer (already throttled).
    RequestKeyframe {
        track: TrackId,
        layer: usize,
    },
    /// Dynacast: the simulcast layers the publisher of `track` should keep sending.
    PublisherLayers {
        publisher: ParticipantId,
        track: TrackId,
        active: [bool; MAX_LAYERS],
    },
    /// The leg is gone from the forwarding table; its queue can be dropped. `resume`:
    /// where a later leg on the same SSRC continues its sequence numbers and timestamps.
    LegClosed {
        leg: LegId,
        resume: LegStart,
    },
}

/// One packet forwarded on one leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub leg: LegId,
    pub header: RewrittenHeader,
    /// This packet started the leg's layer (a keyframe it waited for): packets of that
    /// layer that arrived before it, numbered after it, belong on the leg too (see
    /// [`Room::replay`]).
    pub starts_layer: bool,
}

/// The parts of an incoming RTP packet the router reads.
#[derive(Clone, Copy, Debug)]
pub struct RtpIn<'a> {
    /// The simulcast layer it belongs to (0 without simulcast).
    pub layer: usize,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub payload: &'a [u8],
    /// RFC 6464 level (-dBov) of an audio packet, when the extension is there.
    pub audio_level: Option<u8>,
}

/// How often each subscriber's layers are chosen again (and dynacast and the speaker
/// list are brought up to date). Fast enough to follow a falling estimate within a
/// few feedback rounds, slow enough to cost nothing per packet.
pub const ALLOCATION_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("someone in this room is already called {0:?}")]
    NameTaken(String),
    #[error("the room is full ({0} participants)")]
    RoomFull(usize),
    #[error("participant {0} is not in this room")]
    UnknownParticipant(ParticipantId),
}

/// What a participant learns when it joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinSnapshot {
    pub participants: Vec<ParticipantInfo>,
    pub tracks: Vec<TrackInfo>,
}

/// What the room knows of one subscriber's downlink.
#[derive(Debug, Default)]
pub struct Downlink {
    /// What the connection's bandwidth estimate lets its media take; `None` until its
    /// feedback says anything.
    pub estimate: Option<Budget>,
    pub views: HashMap<TrackId, View>,
    /// From the last allocation: what its tiles would take, and what they got.
    pub wanted_bps: u64,
    pub allocated_bps: u64,
    /// When the estimate last fell: layers are not raised again soon after.
    pub last_decrease: Option<Instant>,
}

#[derive(Debug)]
pub struct Room {
    max_participants: usize,
    pub(super) participants: BTreeMap<ParticipantId, ParticipantInfo>,
    pub(super) producers: BTreeMap<TrackId, Producer>,
    pub(super) consumers: HashMap<LegId, Consumer>,
    /// The forwarding table: producer -> its subscriber legs.
    routes: HashMap<TrackId, Vec<LegId>>,
    pub(super) downlinks: HashMap<ParticipantId, Downlink>,
    /// Participants whose grants do not let them subscribe.
    not_subscribing: std::collections::HashSet<ParticipantId>,
    /// (participant, kind) an administrator muted: their tracks of that kind, present
    /// and future, are not forwarded.
    silenced: std::collections::HashSet<(ParticipantId, MediaKind)>,
    pub(super) speakers: SpeakerDetector,
    pub(super) next_allocation: Option<Instant>,
    pub(super) outputs: VecDeque<Output>,
    /// What became of the packets that reached the room; `legs` holds the closed legs'
    /// counts (the live ones are added by [`Room::rtp_counts`]).
    rtp: RoomRtpCounts,
}

/// What became of the RTP packets a room was given, by cause:
/// `packets_in == unknown_track + no_subscribers + silenced + routed`, and each routed
/// packet is offered to every leg of its track (see [`LegCounts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoomRtpCounts {
    pub packets_in: u64,
    /// For a track the room does not know (late after unpublish).
    pub unknown_track: u64,
    /// For a track nobody subscribes to.
    pub no_subscribers: u64,
    /// Muted by an administrator.
    pub silenced: u64,
    pub routed: u64,
    pub legs: LegCounts,
}

impl RoomRtpCounts {
    pub fn add(&mut self, o: &RoomRtpCounts) {
        self.packets_in += o.packets_in;
        self.unknown_track += o.unknown_track;
        self.no_subscribers += o.no_subscribers;
        self.silenced += o.silenced;
        self.routed += o.routed;
        self.legs.add(&o.legs);
    }
}

impl Room {
    pub fn new(max_participants: usize) -> Self {
        Room {
            max_participants,
            participants: BTreeMap::new(),
            producers: BTreeMap::new(),
            consumers: HashMap::new(),
            routes: HashMap::new(),
            downlinks: HashMap::new(),
            not_subscribing: std::collections::HashSet::new(),
            silenced: std::collections::HashSet::new(),
            speakers: SpeakerDetector::new(),
            next_allocation: None,
            outputs: VecDeque::new(),
            rtp: RoomRtpCounts::default(),
        }
    }

    pub fn participants(&self) -> impl Iterator<Item = &ParticipantInfo> {
        self.participants.values()
    }

    pub fn participant(&self, id: ParticipantId) -> Option<&ParticipantInfo> {
        self.participants.get(&id)
    }

    /// An administrator's limit (those already in stay).
    pub fn set_max_participants(&mut self, max: usize) {
        self.max_participants = max.max(1);
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    pub fn tracks(&self) -> impl Iterator<Item = TrackInfo> + '_ {
        self.producers.values().map(track_info)
    }

    pub fn join(&mut self, id: ParticipantId, name: &str) -> Result<JoinSnapshot, RoomError> {
        self.join_as(id, name, true)
    }

    /// Joins; a participant that may not subscribe (`subscribe` false, a publish-only
    /// token) is never given a leg.
    pub fn join_as(
        &mut self,
        id: ParticipantId,
        name: &str,
        subscribe: bool,
    ) -> Result<JoinSnapshot, RoomError> {
        if self.participants.values().any(|p| p.name == name) {
            return Err(RoomError::NameTaken(name.to_string()));
        }
        if self.participants.len() >= self.max_participants {
            return Err(RoomError::RoomFull(self.max_participants));
        }
        let snapshot = JoinSnapshot {
            participants: self.participants.values().cloned().collect(),
            tracks: self.tracks().collect(),
        };
        let info = ParticipantInfo::new(id, name.to_string());
        self.notify_others(id, RoomEvent::ParticipantJoined(info.clone()));
        self.participants.insert(id, info);
        self.downlinks.insert(id, Downlink::default());
        if !subscribe {
            self.not_subscribing.insert(id);
            return Ok(snapshot);
        }
        for track in &snapshot.tracks {
            self.outputs.push_back(Output::Subscribe {
                subscriber: id,
                track: track.clone(),
            });
        }
        Ok(snapshot)
    }

    /// The room as `id` should see it now: everyone else, and their tracks. What a
    /// participant whose notifications were dropped (its signaling fell behind) is sent
    /// to start over from.
    pub fn snapshot_for(&self, id: ParticipantId) -> JoinSnapshot {
        JoinSnapshot {
            participants: self
                .participants
                .values()
                .filter(|p| p.id != id)
                .cloned()
                .collect(),
            tracks: self.tracks().filter(|t| t.participant_id != id).collect(),
        }
    }

    /// Removes a participant, its tracks and its legs; everyone else is told.
    pub fn leave(&mut self, id: ParticipantId) {
        if self.participants.remove(&id).is_none() {
            return;
        }
        self.not_subscribing.remove(&id);
        self.silenced.retain(|(p, _)| *p != id);
        let owned: Vec<TrackId> = self
            .producers
            .values()
            .filter(|p| p.owner == id)
            .map(|p| p.id)
            .collect();
        for track in owned {
            self.unpublish(track);
        }
        for leg in self.legs_of(id) {
            self.consumer_closed(leg);
        }
        self.downlinks.remove(&id);
        self.speakers.remove(id);
        self.notify_others(id, RoomEvent::ParticipantLeft(id));
    }

    /// `layers`: how many simulcast layers the publisher sends (1 without simulcast).
    /// The track comes from the camera or the microphone, by its kind.
    pub fn publish(
        &mut self,
        owner: ParticipantId,
        track: TrackId,
        kind: MediaKind,
        codec: Codec,
        layers: usize,
        now: Instant,
    ) -> Result<(), RoomError> {
        let source = Source::of(kind);
        self.publish_from(owner, track, kind, source, codec, layers, now)
    }

    /// [`Room::publish`] for a track whose source the client named (a screen share).
    #[allow(clippy::too_many_arguments)]
    pub fn publish_from(
        &mut self,
        owner: ParticipantId,
        track: TrackId,
        kind: MediaKind,
        source: Source,
        codec: Codec,
        layers: usize,
        now: Instant,
    ) -> Result<(), RoomError> {
        if !self.participants.contains_key(&owner) {
            return Err(RoomError::UnknownParticipant(owner));
        }
        let mut producer = Producer::new(track, owner, kind, codec, layers, now);
        producer.source = source;
        producer.silenced = self.silenced.contains(&(owner, kind));
        // The allocation tick runs once there is something to allocate.
        self.next_allocation
            .get_or_insert(now + ALLOCATION_INTERVAL);
        let info = track_info(&producer);
        self.producers.insert(track, producer);
        self.routes.entry(track).or_default();
        self.notify_others(owner, RoomEvent::TrackPublished(info.clone()));
        for subscriber in self.others(owner) {
            if self.not_subscribing.contains(&subscriber) {
                continue;
            }
            self.outputs.push_back(Output::Subscribe {
                subscriber,
                track: info.clone(),
            });
        }
        Ok(())
    }

    pub fn unpublish(&mut self, track: TrackId) {
        let Some(producer) = self.producers.remove(&track) else {
            return;
        };
        for leg in self.routes.remove(&track).unwrap_or_default() {
            if let Some(c) = self.consumers.remove(&leg) {
                self.rtp.legs.add(&c.counts);
                let resume = c.resume_point();
                self.outputs.push_back(Output::LegClosed { leg, resume });
            }
        }
        // Its tiles are gone: a long meeting must not fill the views' bound with them.
        for d in self.downlinks.values_mut() {
            d.views.remove(&track);
        }
        let owner = producer.owner;
        self.notify_others(
            owner,
            RoomEvent::TrackUnpublished {
                track_id: track,
                participant_id: owner,
            },
        );
        for subscriber in self.others(owner) {
            self.outputs
                .push_back(Output::Unsubscribe { subscriber, track });
        }
    }

    /// A subscriber leg was negotiated and bound: start forwarding to it. A video leg
    /// waits for a keyframe, so one is requested on the subscriber's behalf.
    pub fn consumer_ready(
        &mut self,
        leg: LegId,
        subscriber: ParticipantId,
        track: TrackId,
        params: LegParams,
        start: LegStart,
        now: Instant,
    ) {
        let Some(producer) = self.producers.get(&track) else {
            // Unpublished while the leg was being negotiated.
            self.outputs
                .push_back(Output::LegClosed { leg, resume: start });
            return;
        };
        if !self.participants.contains_key(&subscriber)
            || self.not_subscribing.contains(&subscriber)
        {
            // Gone, or no longer allowed to subscribe, while the leg was negotiated.
            self.outputs
                .push_back(Output::LegClosed { leg, resume: start });
            return;
        }
        let needs_keyframe = producer.codec.is_video();
        let clock_rate = producer.codec.clock_rate();
        let consumer = Consumer::new(
            leg,
            subscriber,
            track,
            params,
            needs_keyframe,
            clock_rate,
            start,
        );
        if let Some(old) = self.consumers.insert(leg, consumer) {
            self.rtp.legs.add(&old.counts);
            self.detach(old.producer, leg);
        }
        self.routes.entry(track).or_default().push(leg);
        // Choose its layer now rather than on the next tick, so it starts on the right
        // one; that asks for the keyframe it waits for.
        self.allocate_for(subscriber, now);
        if let Some(layer) = self.consumers.get(&leg).and_then(|c| c.awaited_keyframe()) {
            self.request_layer_keyframe(track, layer, now);
        }
    }

    pub fn consumer_closed(&mut self, leg: LegId) {
        if let Some(c) = self.consumers.remove(&leg) {
            self.rtp.legs.add(&c.counts);
            self.detach(c.producer, leg);
            let resume = c.resume_point();
            self.outputs.push_back(Output::LegClosed { leg, resume });
        }
    }

    fn detach(&mut self, track: TrackId, leg: LegId) {
        if let Some(legs) = self.routes.get_mut(&track) {
            legs.retain(|l| *l != leg);
        }
    }

    /// A subscriber (PLI/FIR) wants a keyframe of `track`: of the layer it receives, or
    /// of the one it waits for.
    pub fn keyframe_request(&mut self, subscriber: ParticipantId, track: TrackId, now: Instant) {
        let layer = self.routes.get(&track).and_then(|legs| {
            legs.iter()
                .filter_map(|l| self.consumers.get(l))
                .find(|c| c.subscriber == subscriber)
                .and_then(|c| c.awaited_keyframe().or(c.current_layer()))
        });
        self.request_layer_keyframe(track, layer.unwrap_or(0), now);
    }

    /// `subscriber`'s connection is up for the first time. Its legs may have started
    /// before (negotiated with the first offer) and their keyframes were lost with
    /// everything else sent before the keys existed: they start again on a fresh one.
    pub fn subscriber_connected(&mut self, subscriber: ParticipantId, now: Instant) {
        let mut wanted = Vec::new();
        for c in self.consumers.values_mut() {
            if c.subscriber == subscriber && c.restart() {
                if let Some(layer) = c.awaited_keyframe() {
                    wanted.push((c.producer, layer));
                }
            }
        }
        for (track, layer) in wanted {
            self.request_layer_keyframe(track, layer, now);
        }
    }

    pub(super) fn request_layer_keyframe(&mut self, track: TrackId, layer: usize, now: Instant) {
        if let Some(l) = self
            .producers
            .get_mut(&track)
            .and_then(|p| p.layers.get_mut(layer))
        {
            if l.keyframe_throttle.request(now) {
                self.outputs
                    .push_back(Output::RequestKeyframe { track, layer });
            }
        }
    }

    /// How a subscriber shows one remote video (from its client).
    pub fn set_view(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        view: View,
        now: Instant,
    ) {
        let Some(d) = self.downlinks.get_mut(&subscriber) else {
            return;
        };
        if d.views.len() >= 256 && !d.views.contains_key(&track) {
            return; // more tiles than any client shows: a misbehaving one
        }
        if d.views.insert(track, view) != Some(view) {
            self.allocate_for(subscriber, now);
        }
    }

    /// A subscriber connection is not limited (any more): every tile gets the layer its
    /// size asks for.
    pub fn clear_estimate(&mut self, subscriber: ParticipantId) {
        if let Some(d) = self.downlinks.get_mut(&subscriber) {
            d.estimate = None;
        }
    }

    /// A subscriber connection's bandwidth estimate changed, the same for every layer.
    #[cfg(test)]
    pub fn set_estimate(&mut self, subscriber: ParticipantId, bps: u64, now: Instant) {
        self.set_estimates(subscriber, bps, bps, now);
    }

    /// What `subscriber`'s downlink may spend (`bps`), and what its videos' lowest
    /// layers may take (`for_lowest`; the allocator takes it as at least `bps`).
    pub fn set_estimates(
        &mut self,
        subscriber: ParticipantId,
        bps: u64,
        for_lowest: u64,
        now: Instant,
    ) {
        if let Some(d) = self.downlinks.get_mut(&subscriber) {
            // A cut, not the wobble of what arrived (the engine passes what it may spend).
            if d.estimate.is_some_and(|e| bps < e.spend / 10 * 9) {
                d.last_decrease = Some(now);
            }
            d.estimate = Some(Budget {
                spend: bps,
                lowest: for_lowest,
            });
        }
    }

    pub fn downlink(&self, subscriber: ParticipantId) -> Option<&Downlink> {
        self.downlinks.get(&subscriber)
    }

    /// A participant's own mute or unmute. Telling everyone what they already know is
    /// skipped: a client toggling the same state in a loop costs the room nothing.
    pub fn set_muted(&mut self, id: ParticipantId, kind: MediaKind, muted: bool) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        if p.is_muted(kind) == muted {
            return;
        }
        p.set_muted(kind, muted);
        if kind == MediaKind::Audio {
            self.speakers.set_muted(id, muted);
        }
        self.notify_others(
            id,
            RoomEvent::Mute {
                participant_id: id,
                kind,
                muted,
            },
        );
    }

    /// An administrator mutes (or unmutes) a participant's tracks of `kind`: they stop
    /// being forwarded (the participant's own unmute does not bring them back), and
    /// everyone, the participant included, is told. False: no such participant.
    pub fn admin_mute(&mut self, id: ParticipantId, kind: MediaKind, muted: bool) -> bool {
        let Some(p) = self.participants.get_mut(&id) else {
            return false;
        };
        p.set_muted(kind, muted);
        if muted {
            self.silenced.insert((id, kind));
        } else {
            self.silenced.remove(&(id, kind));
        }
        for producer in self.producers.values_mut() {
            if producer.owner == id && producer.kind == kind {
                producer.silenced = muted;
            }
        }
        if kind == MediaKind::Audio {
            self.speakers.set_muted(id, muted);
        }
        self.notify_all(RoomEvent::Mute {
            participant_id: id,
            kind,
            muted,
        });
        true
    }

    /// Grants or revokes subscribing: revoking closes the participant's legs, granting
    /// opens one per track. False: no such participant.
    pub fn set_can_subscribe(&mut self, id: ParticipantId, subscribe: bool) -> bool {
        if !self.participants.contains_key(&id) {
            return false;
        }
        let was = !self.not_subscribing.contains(&id);
        if was == subscribe {
            return true;
        }
        if subscribe {
            self.not_subscribing.remove(&id);
            let tracks: Vec<TrackInfo> = self.tracks().filter(|t| t.participant_id != id).collect();
            for track in tracks {
                self.outputs.push_back(Output::Subscribe {
                    subscriber: id,
                    track,
                });
            }
        } else {
            self.not_subscribing.insert(id);
            for leg in self.legs_of(id) {
                self.consumer_closed(leg);
            }
            // The subscriber's connection drops those m-sections too: closing the legs
            // alone left them negotiated, so a later grant found nothing to negotiate
            // and media never came back.
            let tracks: Vec<TrackId> = self
                .tracks()
                .filter(|t| t.participant_id != id)
                .map(|t| t.track_id)
                .collect();
            for track in tracks {
                self.outputs.push_back(Output::Unsubscribe {
                    subscriber: id,
                    track,
                });
            }
        }
        true
    }

    /// The hot path: decides, per subscriber leg, whether and how a packet is forwarded.
    /// Appends to `out` (reused by the caller, so no allocation per packet). Returns
    /// whether a leg waits for a keyframe of this packet's layer: the caller holds such
    /// packets for [`Room::replay`], in case the keyframe's first packet comes late.
    pub fn route_rtp(
        &mut self,
        track: TrackId,
        rtp: RtpIn<'_>,
        now: Instant,
        out: &mut Vec<Forward>,
    ) -> bool {
        self.rtp.packets_in += 1;
        let Some(producer) = self.producers.get_mut(&track) else {
            self.rtp.unknown_track += 1;
            return false;
        };
        let bytes = rtp.payload.len() + RTP_HEADER_BYTES;
        let keyframe = producer.packet_in(
            rtp.layer,
            rtp.sequence_number,
            rtp.timestamp,
            rtp.payload,
            bytes,
            now,
        );
        if producer.silenced {
            self.rtp.silenced += 1;
            return false;
        }
        let Some(legs) = self.routes.get(&track).filter(|legs| !legs.is_empty()) else {
            self.rtp.no_subscribers += 1;
            return false;
        };
        self.rtp.routed += 1;
        let is_video = producer.codec.is_video();
        // Read once, renumbered per leg (each leg switches layers on its own).
        let pictures = producer.codec.picture_numbering(rtp.payload);
        if let Some(level) = rtp.audio_level {
            self.speakers.audio_level(producer.owner, level, now);
        }
        let mut awaited = [false; MAX_LAYERS];
        for leg in legs {
            let Some(consumer) = self.consumers.get_mut(leg) else {
                continue;
            };
            consumer.counts.offered += 1;
            let start = keyframe || !is_video;
            let before = consumer.current_layer();
            match consumer.forward(rtp.layer, rtp.sequence_number, rtp.timestamp, start, now) {
                Some(mut header) => {
                    let starts_layer = is_video && before != Some(rtp.layer);
                    if let Some(source) = pictures {
                        header.vp8 = consumer.renumber_pictures(source, starts_layer);
                    }
                    if starts_layer {
                        // Once per switch, not per packet: what a stall after a switch
                        // is read from (docs/RTCP.md, "Not yet").
                        let late = producer.layers.get(rtp.layer).map(|l| l.highest_seq())
                            != Some(Some(rtp.sequence_number));
                        tracing::debug!(%track, subscriber = %consumer.subscriber, from = ?before,
                            to = rtp.layer, seq = rtp.sequence_number, out_seq = header.sequence_number,
                            late, "leg starts a layer");
                    }
                    out.push(Forward {
                        leg: *leg,
                        header,
                        starts_layer,
                    })
                }
                None => {
                    if let Some(l) = consumer.awaited_keyframe().filter(|l| *l < MAX_LAYERS) {
                        awaited[l] = true;
                    }
                }
            }
        }
        let held = awaited.get(rtp.layer).copied().unwrap_or(false);
        // A lost keyframe must not leave a subscriber black or stuck on a layer: ask
        // again (throttled per layer), but only for layers that flow.
        for (layer, waits) in awaited.into_iter().enumerate() {
            if waits
                && producer.layer_flows(layer, now)
                && producer.layers[layer].keyframe_throttle.request(now)
            {
                tracing::debug!(%track, layer, "a leg still waits for a keyframe: asked again");
                self.outputs
                    .push_back(Output::RequestKeyframe { track, layer });
            }
        }
        held
    }

    /// A packet of `layer` that arrived before the keyframe `leg` switched on, numbered
    /// after it: the keyframe's first packet was lost and came back resent, and the
    /// rest of that picture (and what followed) must not be lost on the leg for it.
    /// `None` unless the leg forwards `layer` now.
    pub fn replay(
        &mut self,
        leg: LegId,
        layer: usize,
        sequence_number: u16,
        timestamp: u32,
        payload: &[u8],
        now: Instant,
    ) -> Option<RewrittenHeader> {
        let consumer = self.consumers.get_mut(&leg)?;
        if consumer.current_layer() != Some(layer) {
            return None;
        }
        let codec = self.producers.get(&consumer.producer)?.codec;
        consumer.counts.replayed += 1;
        let mut header = consumer.forward(layer, sequence_number, timestamp, false, now)?;
        if let Some(source) = codec.picture_numbering(payload) {
            header.vp8 = consumer.renumber_pictures(source, false);
        }
        Some(header)
    }

    /// What became of every packet the room was given, its closed legs included.
    pub fn rtp_counts(&self) -> RoomRtpCounts {
        let mut counts = self.rtp;
        for c in self.consumers.values() {
            counts.legs.add(&c.counts);
        }
        counts
    }

    /// Each live leg of `subscriber`: (track, its counts).
    pub fn leg_counts(&self, subscriber: ParticipantId) -> Vec<(TrackId, LegCounts)> {
        let mut legs: Vec<_> = self
            .consumers
            .values()
            .filter(|c| c.subscriber == subscriber)
            .map(|c| (c.producer, c.counts))
            .collect();
        legs.sort_by_key(|(t, _)| *t);
        legs
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let keyframes = self
            .producers
            .values()
            .flat_map(|p| p.layers.iter())
            .filter_map(|l| l.keyframe_throttle.poll_timeout())
            .min();
        [keyframes, self.next_allocation]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for p in self.producers.values_mut() {
            for (layer, l) in p.layers.iter_mut().enumerate() {
                if l.keyframe_throttle.handle_timeout(now) {
                    tracing::debug!(track = %p.id, layer, "deferred keyframe request due");
                    self.outputs
                        .push_back(Output::RequestKeyframe { track: p.id, layer });
                }
            }
        }
        if self.next_allocation.is_none_or(|t| now >= t) {
            self.next_allocation = Some(now + ALLOCATION_INTERVAL);
            self.allocation_tick(now);
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Counters for a track: (packets in, keyframe requests sent, requests coalesced).
    pub fn producer_counters(&self, track: TrackId) -> Option<(u64, u64, u64)> {
        self.producers.get(&track).map(|p| {
            p.layers.iter().fold((p.packets_in, 0, 0), |(n, s, c), l| {
                (
                    n,
                    s + l.keyframe_throttle.sent,
                    c + l.keyframe_throttle.coalesced,
                )
            })
        })
    }

    fn others(&self, except: ParticipantId) -> Vec<ParticipantId> {
        self.participants
            .keys()
            .filter(|p| **p != except)
            .copied()
            .collect()
    }

    /// The legs `subscriber` receives (a scan of all legs: not for the per-packet path).
    pub(super) fn legs_of(&self, subscriber: ParticipantId) -> Vec<LegId> {
        self.consumers
            .values()
            .filter(|c| c.subscriber == subscriber)
            .map(|c| c.leg)
            .collect()
    }

    pub(super) fn notify_all(&mut self, event: RoomEvent) {
        for to in self.participants.keys() {
            self.outputs.push_back(Output::Notify {
                to: *to,
                event: event.clone(),
            });
        }
    }

    fn notify_others(&mut self, except: ParticipantId, event: RoomEvent) {
        for to in self.participants.keys().filter(|p| **p != except) {
            self.outputs.push_back(Output::Notify {
                to: *to,
                event: event.clone(),
            });
        }
    }
}

/// Counted per packet for bitrates (extensions left out).
const RTP_HEADER_BYTES: usize = 12;

fn track_info(p: &Producer) -> TrackInfo {
    TrackInfo {
        track_id: p.id,
        participant_id: p.owner,
        kind: p.kind,
        source: p.source,
    }
}

#[cfg(test)]
#[path = "room_tests.rs"]
mod tests;
