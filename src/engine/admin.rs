//! Room administration (the admin API, signal/admin.rs), carried out on the shard that
//! holds the room: create a room with options, close it, remove a participant, mute
//! one's tracks, change one's grants.

use std::time::{Duration, Instant};

use super::routing::RoomHost;
use super::shard::Shard;
use super::{EngineError, PeerOutput, RoomSummary};
use crate::auth::{Grants, Source};
use crate::id::{MediaKind, ParticipantId};

#[derive(Debug)]
pub enum AdminOp {
    /// Opens the room now (or changes the options of an open one). `empty_timeout`: how
    /// long it stays open with nobody in it (none: it closes when the last one leaves).
    Create {
        max_participants: Option<usize>,
        empty_timeout: Option<Duration>,
    },
    /// Everyone is told and disconnected; the room is gone.
    Close,
    /// Everyone is told to join again on another node (this one drains), and
    /// disconnected; the room is gone from here.
    Move {
        node: String,
        url: String,
    },
    Remove {
        participant: ParticipantId,
    },
    Mute {
        participant: ParticipantId,
        kind: MediaKind,
        muted: bool,
    },
    UpdateGrants {
        participant: ParticipantId,
        grants: Grants,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("no such room")]
    UnknownRoom,
    #[error("no such participant in this room")]
    UnknownParticipant,
    #[error("the media engine did not answer")]
    Unavailable,
}

pub type AdminReply = Result<Option<RoomSummary>, AdminError>;

impl Shard {
    pub(super) fn admin(&mut self, room: &str, op: AdminOp, now: Instant) -> AdminReply {
        if let AdminOp::Create {
            max_participants,
            empty_timeout,
        } = op
        {
            let key = self.open_room(room);
            let host = self.rooms.get_mut(&key).expect("inserted above");
            if let Some(max) = max_participants {
                host.room.set_max_participants(max);
            }
            host.empty_timeout = empty_timeout;
            if host.room.is_empty() {
                host.empty_since.get_or_insert(now);
            }
            return Ok(Some(summary(host)));
        }
        let key = *self.room_keys.get(room).ok_or(AdminError::UnknownRoom)?;
        let host = self.rooms.get_mut(&key).ok_or(AdminError::UnknownRoom)?;
        let member = |host: &RoomHost, id: ParticipantId| {
            host.room
                .participant(id)
                .map(|_| ())
                .ok_or(AdminError::UnknownParticipant)
        };
        // Screen shares whose grant was revoked: unpublished once `host` is let go.
        let mut stop_sharing: Vec<(ParticipantId, String)> = Vec::new();
        match op {
            AdminOp::Create { .. } => unreachable!("handled above"),
            AdminOp::Close => {
                let ids: Vec<ParticipantId> = host.room.participants().map(|p| p.id).collect();
                host.empty_timeout = None; // closes with its last participant
                for id in ids {
                    self.remove_by_admin(id, "the room was closed by an administrator", now);
                }
                self.finish_room(key);
                return Ok(None);
            }
            AdminOp::Move { node, url } => {
                let ids: Vec<ParticipantId> = host.room.participants().map(|p| p.id).collect();
                host.empty_timeout = None;
                for id in ids {
                    if let Some(peer) = self.peers.get_mut(&id) {
                        peer.tell(PeerOutput::Moved {
                            node: node.clone(),
                            url: url.clone(),
                        });
                    }
                    self.remove_participant(id, "the room moved to another node", now);
                }
                self.finish_room(key);
                return Ok(None);
            }
            AdminOp::Remove { participant } => {
                member(host, participant)?;
                self.remove_by_admin(participant, "removed by an administrator", now);
                return Ok(None);
            }
            AdminOp::Mute {
                participant,
                kind,
                muted,
            } => {
                member(host, participant)?;
                host.room.admin_mute(participant, kind, muted);
            }
            AdminOp::UpdateGrants {
                participant,
                grants,
            } => {
                member(host, participant)?;
                let peer = self
                    .peers
                    .get_mut(&participant)
                    .ok_or(AdminError::UnknownParticipant)?;
                // Publishing revoked silences what is published of that kind (as an
                // administrator's mute would); granted again, it is heard again. (By
                // kind: a camera and a screen share are silenced together.)
                for kind in [MediaKind::Audio, MediaKind::Video] {
                    let source = Source::of(kind);
                    let (before, after) =
                        (peer.grants.may_publish(source), grants.may_publish(source));
                    if before != after {
                        host.room.admin_mute(participant, kind, !after);
                    }
                }
                // A screen share is stopped outright: unpublished for everyone, and the
                // client told as when it was refused at the start.
                if !grants.may_publish(Source::Screen) {
                    stop_sharing.extend(
                        peer.published
                            .iter()
                            .filter(|(_, p)| p.source == Source::Screen)
                            .map(|(rtc_track, _)| (participant, rtc_track.clone())),
                    );
                }
                host.room
                    .set_can_subscribe(participant, grants.can_subscribe);
                peer.grants = grants;
                peer.refused_tracks.clear();
            }
        }
        let out = Some(summary(host));
        for (participant, rtc_track) in stop_sharing {
            self.unpublish(participant, &rtc_track, now);
            if let Some(peer) = self.peers.get_mut(&participant) {
                peer.refused_tracks.insert(rtc_track);
                peer.tell(PeerOutput::Error(EngineError::Forbidden(
                    "your grants no longer allow publishing video (screen)".into(),
                )));
            }
        }
        self.drain_room_outputs(key, now);
        Ok(out)
    }

    fn remove_by_admin(&mut self, id: ParticipantId, why: &'static str, now: Instant) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.tell(PeerOutput::Removed(why));
        }
        self.remove_participant(id, why, now);
    }

    /// Rooms kept open with nobody in them (an admin's `empty_timeout`) close once it
    /// has passed; on the housekeeping tick.
    pub(super) fn close_expired_rooms(&mut self, now: Instant) {
        let expired: Vec<_> = self
            .rooms
            .iter()
            .filter(|(_, h)| {
                h.room.is_empty()
                    && h.empty_since
                        .zip(h.empty_timeout)
                        .is_some_and(|(since, t)| now.saturating_duration_since(since) >= t)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.finish_room(key);
        }
    }
}

fn summary(host: &RoomHost) -> RoomSummary {
    RoomSummary {
        name: host.name.clone(),
        participants: host.room.participants().cloned().collect(),
    }
}
