//! One task per room owns the [`Room`] core: it takes control commands and media from
//! the participants' tasks, runs the core, and carries out its outputs. It never awaits
//! anything but its own inboxes: media goes to subscriber legs with `try_send`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info_span, Instrument};
use webrtc::media_stream::track_remote::TrackRemote;

use super::registry::Rooms;
use crate::id::{LegId, MediaKind, ParticipantId, TrackId};
use crate::metrics::Metrics;
use crate::room::{
    Codec, Forward, JoinSnapshot, LegParams, Output, ParticipantInfo, RewrittenHeader, Room,
    RoomError, RoomEvent, RtpIn, TrackInfo,
};

/// Room inbox for media from all publishers; full means the room is overloaded and the
/// packet is dropped (counted), never that a publisher waits.
const MEDIA_INBOX: usize = 4096;
const MEDIA_BATCH: usize = 64;
/// Counted per forwarded packet for the bitrate figure (extensions left out).
const RTP_HEADER_BYTES: u64 = 12;

/// A published track as a subscriber's session needs it to open a leg.
#[derive(Debug)]
pub struct TrackDesc {
    pub info: TrackInfo,
    pub codec: RTCRtpCodec,
    /// The publisher's header-extension ids and their URIs.
    pub extensions: Vec<(u8, String)>,
}

/// What a participant's session hears from its room.
#[derive(Debug)]
pub enum SessionEvent {
    Room(RoomEvent),
    Subscribe(Arc<TrackDesc>),
    Unsubscribe(TrackId),
}

pub struct MediaIn {
    pub track: TrackId,
    pub packet: rtp::Packet,
}

pub enum RoomCommand {
    Join {
        id: ParticipantId,
        name: String,
        events: mpsc::UnboundedSender<SessionEvent>,
        reply: oneshot::Sender<Result<JoinSnapshot, RoomError>>,
    },
    Leave {
        id: ParticipantId,
    },
    Publish {
        owner: ParticipantId,
        desc: Arc<TrackDesc>,
        remote: Arc<dyn TrackRemote>,
        ssrc: u32,
    },
    Unpublish {
        track: TrackId,
    },
    LegReady {
        leg: LegId,
        subscriber: ParticipantId,
        track: TrackId,
        params: LegParams,
        queue: mpsc::Sender<rtp::Packet>,
    },
    LegClosed {
        leg: LegId,
    },
    KeyframeRequest {
        track: TrackId,
    },
    Mute {
        id: ParticipantId,
        kind: MediaKind,
        muted: bool,
    },
    Participants {
        reply: oneshot::Sender<Vec<ParticipantInfo>>,
    },
}

/// How the rest of the server talks to a room.
#[derive(Clone)]
pub struct RoomHandle {
    pub name: Arc<str>,
    pub generation: u64,
    commands: mpsc::UnboundedSender<RoomCommand>,
    pub media: mpsc::Sender<MediaIn>,
}

impl RoomHandle {
    /// Sends a command; false when the room has shut down.
    pub fn send(&self, cmd: RoomCommand) -> bool {
        self.commands.send(cmd).is_ok()
    }
}

struct Published {
    desc: Arc<TrackDesc>,
    remote: Arc<dyn TrackRemote>,
    ssrc: u32,
}

struct RoomActor {
    handle_name: Arc<str>,
    generation: u64,
    room: Room,
    rooms: Rooms,
    metrics: Arc<Metrics>,
    commands: mpsc::UnboundedReceiver<RoomCommand>,
    media: mpsc::Receiver<MediaIn>,
    sessions: HashMap<ParticipantId, mpsc::UnboundedSender<SessionEvent>>,
    tracks: HashMap<TrackId, Published>,
    legs: HashMap<LegId, mpsc::Sender<rtp::Packet>>,
    forwards: Vec<Forward>,
}

pub fn spawn_room(
    name: &str,
    generation: u64,
    max_participants: usize,
    rooms: Rooms,
    metrics: Arc<Metrics>,
) -> RoomHandle {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (media_tx, media_rx) = mpsc::channel(MEDIA_INBOX);
    let name: Arc<str> = name.into();
    let actor = RoomActor {
        handle_name: name.clone(),
        generation,
        room: Room::new(max_participants),
        rooms,
        metrics,
        commands: cmd_rx,
        media: media_rx,
        sessions: HashMap::new(),
        tracks: HashMap::new(),
        legs: HashMap::new(),
        forwards: Vec::with_capacity(64),
    };
    let span = info_span!("room", name = %name);
    tokio::spawn(actor.run().instrument(span));
    RoomHandle {
        name,
        generation,
        commands: cmd_tx,
        media: media_tx,
    }
}

impl RoomActor {
    async fn run(mut self) {
        debug!("room opened");
        let mut batch = Vec::with_capacity(MEDIA_BATCH);
        loop {
            let deadline = self.room.poll_timeout();
            tokio::select! {
                biased;
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => {
                        if self.handle_command(cmd) {
                            break;
                        }
                    }
                    None => break,
                },
                n = self.media.recv_many(&mut batch, MEDIA_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let now = Instant::now();
                    for m in batch.drain(..) {
                        self.route(m, now);
                    }
                }
                _ = sleep_until(deadline) => self.room.handle_timeout(Instant::now()),
            }
            self.carry_out_outputs();
        }
        debug!("room closed");
    }

    /// Returns true when the room is empty and has been taken off the registry.
    fn handle_command(&mut self, cmd: RoomCommand) -> bool {
        let now = Instant::now();
        match cmd {
            RoomCommand::Join {
                id,
                name,
                events,
                reply,
            } => {
                let result = self.room.join(id, &name);
                if result.is_ok() {
                    self.sessions.insert(id, events);
                }
                let _ = reply.send(result);
            }
            RoomCommand::Leave { id } => {
                self.room.leave(id);
                self.sessions.remove(&id);
                self.carry_out_outputs();
                if self.room.is_empty() && self.rooms.remove_if(&self.handle_name, self.generation)
                {
                    return true;
                }
            }
            RoomCommand::Publish {
                owner,
                desc,
                remote,
                ssrc,
            } => {
                let info = &desc.info;
                let codec = Codec::from_mime(&desc.codec.mime_type);
                if self
                    .room
                    .publish(owner, info.track_id, info.kind, codec)
                    .is_ok()
                {
                    self.tracks
                        .insert(info.track_id, Published { desc, remote, ssrc });
                }
            }
            RoomCommand::Unpublish { track } => {
                self.room.unpublish(track);
                self.tracks.remove(&track);
            }
            RoomCommand::LegReady {
                leg,
                subscriber,
                track,
                params,
                queue,
            } => {
                self.legs.insert(leg, queue);
                let base = (rand::random::<u16>(), rand::random::<u32>());
                self.room
                    .consumer_ready(leg, subscriber, track, params, base, now);
            }
            RoomCommand::LegClosed { leg } => {
                self.room.consumer_closed(leg);
                self.legs.remove(&leg);
            }
            RoomCommand::KeyframeRequest { track } => {
                Metrics::inc(&self.metrics.keyframe_requests_from_subscribers);
                self.room.keyframe_request(track, now);
            }
            RoomCommand::Mute { id, kind, muted } => self.room.set_muted(id, kind, muted),
            RoomCommand::Participants { reply } => {
                let _ = reply.send(self.room.participants().cloned().collect());
            }
        }
        false
    }

    /// The per-packet path: core decides, each leg gets its rewritten copy by try_send.
    fn route(&mut self, m: MediaIn, now: Instant) {
        Metrics::inc(&self.metrics.rtp_in);
        let rtp_in = RtpIn {
            sequence_number: m.packet.header.sequence_number,
            timestamp: m.packet.header.timestamp,
            payload: &m.packet.payload,
        };
        self.forwards.clear();
        self.room
            .route_rtp(m.track, rtp_in, now, &mut self.forwards);
        for f in &self.forwards {
            let Some(queue) = self.legs.get(&f.leg) else {
                continue;
            };
            let mut packet = m.packet.clone();
            apply_rewrite(&mut packet.header, &f.header);
            let bytes = packet.payload.len() as u64 + RTP_HEADER_BYTES;
            match queue.try_send(packet) {
                Ok(()) => {
                    Metrics::inc(&self.metrics.rtp_forwarded);
                    self.metrics
                        .rtp_forwarded_bytes
                        .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                }
                Err(_) => Metrics::inc(&self.metrics.rtp_leg_dropped),
            }
        }
    }

    fn carry_out_outputs(&mut self) {
        while let Some(output) = self.room.poll_output() {
            match output {
                Output::Notify { to, event } => self.tell(to, SessionEvent::Room(event)),
                Output::Subscribe { subscriber, track } => {
                    if let Some(p) = self.tracks.get(&track.track_id) {
                        self.tell(subscriber, SessionEvent::Subscribe(p.desc.clone()));
                    }
                }
                Output::Unsubscribe { subscriber, track } => {
                    self.tell(subscriber, SessionEvent::Unsubscribe(track))
                }
                Output::RequestKeyframe { track } => self.request_keyframe(track),
                Output::LegClosed { leg } => {
                    self.legs.remove(&leg);
                }
            }
        }
    }

    fn tell(&self, to: ParticipantId, event: SessionEvent) {
        if let Some(session) = self.sessions.get(&to) {
            let _ = session.send(event);
        }
    }

    fn request_keyframe(&self, track: TrackId) {
        let Some(p) = self.tracks.get(&track) else {
            return;
        };
        Metrics::inc(&self.metrics.keyframe_requests_to_publishers);
        let remote = p.remote.clone();
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: p.ssrc,
        };
        // At most about one per second per track (the core throttles), so a task each is fine.
        tokio::spawn(async move {
            let _ = remote.write_rtcp(vec![Box::new(pli)]).await;
        });
    }
}

/// Gives a packet the header its subscriber leg negotiated.
pub fn apply_rewrite(h: &mut rtp::header::Header, r: &RewrittenHeader) {
    h.ssrc = r.ssrc;
    h.sequence_number = r.sequence_number;
    h.timestamp = r.timestamp;
    h.payload_type = r.payload_type;
    if h.extension {
        h.extensions.retain_mut(|e| match r.ext_map.get(e.id) {
            Some(id) => {
                e.id = id;
                true
            }
            None => false,
        });
        if h.extensions.is_empty() {
            h.extension = false;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::ExtMap;
    use rtc::rtp::header::Extension;

    #[test]
    fn rewrite_sets_leg_fields_and_maps_or_strips_extensions() {
        let mut h = rtp::header::Header {
            version: 2,
            extension: true,
            extension_profile: 0xBEDE,
            payload_type: 96,
            sequence_number: 7,
            timestamp: 9,
            ssrc: 1,
            extensions: vec![
                Extension {
                    id: 1,
                    payload: bytes::Bytes::from_static(&[0x80]),
                },
                Extension {
                    id: 3,
                    payload: bytes::Bytes::from_static(&[1, 2, 3]),
                },
            ],
            ..Default::default()
        };
        let mut map = [0u8; 16];
        map[1] = 5; // audio level: 1 on the publisher, 5 on this leg; id 3 not negotiated
        let r = RewrittenHeader {
            ssrc: 42,
            sequence_number: 100,
            timestamp: 200,
            payload_type: 111,
            ext_map: ExtMap(map),
        };
        apply_rewrite(&mut h, &r);
        assert_eq!(
            (h.ssrc, h.sequence_number, h.timestamp, h.payload_type),
            (42, 100, 200, 111)
        );
        assert_eq!(h.extensions.len(), 1);
        assert_eq!(h.extensions[0].id, 5);
        apply_rewrite(
            &mut h,
            &RewrittenHeader {
                ext_map: ExtMap::default(),
                ..r
            },
        );
        assert!(!h.extension, "no extension left, no extension block");
    }
}
