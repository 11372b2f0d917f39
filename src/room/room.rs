//! The room: who is here, what they publish, who receives what, and the forwarding
//! table. Pure: no I/O, no clock (time is an argument), no webrtc types. One task per
//! room owns it (see `rtc::actor`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use serde::Serialize;

use super::codec::Codec;
use super::consumer::{Consumer, LegParams};
use super::participant::ParticipantInfo;
use super::producer::Producer;
use super::rewrite::RewrittenHeader;
use crate::id::{LegId, MediaKind, ParticipantId, TrackId};

/// A published track as the participants see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrackInfo {
    pub track_id: TrackId,
    pub participant_id: ParticipantId,
    pub kind: MediaKind,
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
    /// Ask the publisher of `track` for a keyframe (already throttled).
    RequestKeyframe {
        track: TrackId,
    },
    /// The leg is gone from the forwarding table; its queue can be dropped.
    LegClosed {
        leg: LegId,
    },
}

/// One packet forwarded on one leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub leg: LegId,
    pub header: RewrittenHeader,
}

/// The parts of an incoming RTP packet the router reads.
#[derive(Clone, Copy, Debug)]
pub struct RtpIn<'a> {
    pub sequence_number: u16,
    pub timestamp: u32,
    pub payload: &'a [u8],
}

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

#[derive(Debug)]
pub struct Room {
    max_participants: usize,
    participants: BTreeMap<ParticipantId, ParticipantInfo>,
    producers: BTreeMap<TrackId, Producer>,
    consumers: HashMap<LegId, Consumer>,
    /// The forwarding table: producer -> its subscriber legs.
    routes: HashMap<TrackId, Vec<LegId>>,
    outputs: VecDeque<Output>,
    /// Packets for tracks the room does not know (late after unpublish): counted.
    pub packets_unrouted: u64,
}

impl Room {
    pub fn new(max_participants: usize) -> Self {
        Room {
            max_participants,
            participants: BTreeMap::new(),
            producers: BTreeMap::new(),
            consumers: HashMap::new(),
            routes: HashMap::new(),
            outputs: VecDeque::new(),
            packets_unrouted: 0,
        }
    }

    pub fn participants(&self) -> impl Iterator<Item = &ParticipantInfo> {
        self.participants.values()
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    pub fn tracks(&self) -> impl Iterator<Item = TrackInfo> + '_ {
        self.producers.values().map(track_info)
    }

    pub fn join(&mut self, id: ParticipantId, name: &str) -> Result<JoinSnapshot, RoomError> {
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
        for track in &snapshot.tracks {
            self.outputs.push_back(Output::Subscribe {
                subscriber: id,
                track: track.clone(),
            });
        }
        Ok(snapshot)
    }

    /// Removes a participant, its tracks and its legs; everyone else is told.
    pub fn leave(&mut self, id: ParticipantId) {
        if self.participants.remove(&id).is_none() {
            return;
        }
        let owned: Vec<TrackId> = self
            .producers
            .values()
            .filter(|p| p.owner == id)
            .map(|p| p.id)
            .collect();
        for track in owned {
            self.unpublish(track);
        }
        let legs: Vec<LegId> = self
            .consumers
            .values()
            .filter(|c| c.subscriber == id)
            .map(|c| c.leg)
            .collect();
        for leg in legs {
            self.consumer_closed(leg);
        }
        self.notify_others(id, RoomEvent::ParticipantLeft(id));
    }

    pub fn publish(
        &mut self,
        owner: ParticipantId,
        track: TrackId,
        kind: MediaKind,
        codec: Codec,
    ) -> Result<(), RoomError> {
        if !self.participants.contains_key(&owner) {
            return Err(RoomError::UnknownParticipant(owner));
        }
        let producer = Producer::new(track, owner, kind, codec);
        let info = track_info(&producer);
        self.producers.insert(track, producer);
        self.routes.entry(track).or_default();
        self.notify_others(owner, RoomEvent::TrackPublished(info.clone()));
        for subscriber in self.others(owner) {
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
            self.consumers.remove(&leg);
            self.outputs.push_back(Output::LegClosed { leg });
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
        seq_ts_base: (u16, u32),
        now: Instant,
    ) {
        let Some(producer) = self.producers.get(&track) else {
            // Unpublished while the leg was being negotiated.
            self.outputs.push_back(Output::LegClosed { leg });
            return;
        };
        if !self.participants.contains_key(&subscriber) {
            self.outputs.push_back(Output::LegClosed { leg });
            return;
        }
        let needs_keyframe = producer.codec.is_video();
        let consumer = Consumer::new(leg, subscriber, track, params, needs_keyframe, seq_ts_base);
        if let Some(old) = self.consumers.insert(leg, consumer) {
            self.detach(old.producer, leg);
        }
        self.routes.entry(track).or_default().push(leg);
        if needs_keyframe {
            self.keyframe_request(track, now);
        }
    }

    pub fn consumer_closed(&mut self, leg: LegId) {
        if let Some(c) = self.consumers.remove(&leg) {
            self.detach(c.producer, leg);
            self.outputs.push_back(Output::LegClosed { leg });
        }
    }

    fn detach(&mut self, track: TrackId, leg: LegId) {
        if let Some(legs) = self.routes.get_mut(&track) {
            legs.retain(|l| *l != leg);
        }
    }

    /// A subscriber (PLI/FIR) or the room itself wants a keyframe of `track`.
    pub fn keyframe_request(&mut self, track: TrackId, now: Instant) {
        if let Some(p) = self.producers.get_mut(&track) {
            if p.keyframe_throttle.request(now) {
                self.outputs.push_back(Output::RequestKeyframe { track });
            }
        }
    }

    pub fn set_muted(&mut self, id: ParticipantId, kind: MediaKind, muted: bool) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.set_muted(kind, muted);
        self.notify_others(
            id,
            RoomEvent::Mute {
                participant_id: id,
                kind,
                muted,
            },
        );
    }

    /// The hot path: decides, per subscriber leg, whether and how a packet is forwarded.
    /// Appends to `out` (reused by the caller, so no allocation per packet).
    pub fn route_rtp(
        &mut self,
        track: TrackId,
        rtp: RtpIn<'_>,
        now: Instant,
        out: &mut Vec<Forward>,
    ) {
        let (Some(producer), Some(legs)) =
            (self.producers.get_mut(&track), self.routes.get(&track))
        else {
            self.packets_unrouted += 1;
            return;
        };
        producer.packets_in += 1;
        let is_video = producer.codec.is_video();
        let keyframe = is_video && producer.codec.is_keyframe_start(rtp.payload);
        if keyframe {
            producer.keyframes_in += 1;
            producer.keyframe_throttle.keyframe_received();
        }
        let mut someone_waits = false;
        for leg in legs {
            let Some(consumer) = self.consumers.get_mut(leg) else {
                continue;
            };
            match consumer.forward(rtp.sequence_number, rtp.timestamp, keyframe || !is_video) {
                Some(header) => out.push(Forward { leg: *leg, header }),
                None => someone_waits |= consumer.waiting_for_keyframe(),
            }
        }
        // A lost keyframe must not leave a new subscriber black: ask again (throttled).
        if someone_waits && producer.keyframe_throttle.request(now) {
            self.outputs.push_back(Output::RequestKeyframe { track });
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.producers
            .values()
            .filter_map(|p| p.keyframe_throttle.poll_timeout())
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for p in self.producers.values_mut() {
            if p.keyframe_throttle.handle_timeout(now) {
                self.outputs
                    .push_back(Output::RequestKeyframe { track: p.id });
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Counters for a track: (packets in, keyframe requests sent, requests coalesced).
    pub fn producer_counters(&self, track: TrackId) -> Option<(u64, u64, u64)> {
        self.producers.get(&track).map(|p| {
            (
                p.packets_in,
                p.keyframe_throttle.sent,
                p.keyframe_throttle.coalesced,
            )
        })
    }

    fn others(&self, except: ParticipantId) -> Vec<ParticipantId> {
        self.participants
            .keys()
            .filter(|p| **p != except)
            .copied()
            .collect()
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

fn track_info(p: &Producer) -> TrackInfo {
    TrackInfo {
        track_id: p.id,
        participant_id: p.owner,
        kind: p.kind,
    }
}

#[cfg(test)]
#[path = "room_tests.rs"]
mod tests;
