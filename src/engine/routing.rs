//! A room on its shard: the pure [`Room`] core plus what the engine needs beside it
//! (published tracks' descriptions, subscriber legs' senders), the per-packet routing
//! through it, and carrying out the core's outputs.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use rtc::peer_connection::event::RTCTrackEventInit;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use tracing::debug;

use super::peer::{ExtensionMask, Published, RoomKey, TrackDesc};
use super::rewrite::apply_rewrite;
use super::shard::{touch, Shard};
use super::PeerOutput;
use crate::id::{LegId, MediaKind, ParticipantId, TrackId};
use crate::metrics::Metrics;
use crate::room::rewrite::FORWARDED_EXTENSIONS;
use crate::room::{Codec, Output, Room, RtpIn, TrackInfo};

/// Counted per forwarded packet for the bitrate figure (extensions left out).
const RTP_HEADER_BYTES: u64 = 12;

/// Decrypted RTP from a publisher, waiting for its room.
pub struct Inbound {
    pub room: RoomKey,
    pub track: TrackId,
    pub packet: rtp::Packet,
}

pub struct RoomHost {
    pub name: String,
    pub room: Room,
    pub tracks: HashMap<TrackId, Arc<TrackDesc>>,
    /// Each subscriber leg's subscriber: where its packets go.
    pub legs: HashMap<LegId, ParticipantId>,
    /// Reused for every packet: the core's per-leg decisions.
    forwards: Vec<crate::room::Forward>,
}

impl RoomHost {
    pub fn new(name: String, max_participants: usize) -> RoomHost {
        RoomHost {
            name,
            room: Room::new(max_participants),
            tracks: HashMap::new(),
            legs: HashMap::new(),
            forwards: Vec::with_capacity(64),
        }
    }
}

impl Shard {
    /// The per-packet path: the core decides per leg, each leg's sender gets its copy.
    pub(super) fn route_inbound(&mut self, now: Instant) {
        let mut inbound = std::mem::take(&mut self.inbound);
        for Inbound {
            room,
            track,
            packet,
        } in inbound.drain(..)
        {
            Metrics::inc(&self.metrics.rtp_in);
            let Some(host) = self.rooms.get_mut(&room) else {
                continue;
            };
            let rtp_in = RtpIn {
                sequence_number: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                payload: &packet.payload,
            };
            host.forwards.clear();
            host.room.route_rtp(track, rtp_in, now, &mut host.forwards);
            for f in &host.forwards {
                let Some(subscriber) = host.legs.get(&f.leg) else {
                    continue;
                };
                let Some(subscriber) = self.peers.get_mut(subscriber) else {
                    continue;
                };
                let mut copy = packet.clone();
                apply_rewrite(&mut copy.header, &f.header);
                let bytes = copy.payload.len() as u64 + RTP_HEADER_BYTES;
                // Straight into the connection's write pipeline. `write_rtp` would check
                // the SSRC, payload type and extension ids against a parameter set it
                // rebuilds for every packet; the leg's rewrite already guarantees all three
                // (they come from this sender's negotiated parameters). rtc ignores the
                // track id here, so an empty one costs no allocation.
                let written = subscriber.pc.handle_write(TaggedRTCMessage {
                    now,
                    message: RTCMessage::RtpPacket(String::new(), copy),
                });
                match written {
                    Ok(()) => {
                        Metrics::inc(&self.metrics.rtp_forwarded);
                        self.metrics.rtp_forwarded_bytes.fetch_add(bytes, Relaxed);
                    }
                    Err(_) => Metrics::inc(&self.metrics.rtp_write_errors),
                }
                touch(&mut self.touched, subscriber);
            }
            self.drain_room_outputs(room, now);
        }
        self.inbound = inbound;
    }

    /// Carries out what the room core asked for.
    pub(super) fn drain_room_outputs(&mut self, key: RoomKey, now: Instant) {
        let mut offers_due = Vec::new();
        loop {
            let Some(host) = self.rooms.get_mut(&key) else {
                return;
            };
            let Some(output) = host.room.poll_output() else {
                break;
            };
            match output {
                Output::Notify { to, event } => {
                    if let Some(peer) = self.peers.get_mut(&to) {
                        peer.tell(PeerOutput::Room(event));
                    }
                }
                Output::Subscribe { subscriber, track } => {
                    let desc = host.tracks.get(&track.track_id).cloned();
                    if let (Some(desc), Some(peer)) = (desc, self.peers.get_mut(&subscriber)) {
                        peer.subscribe(desc);
                        offers_due.push(subscriber);
                    }
                }
                Output::Unsubscribe { subscriber, track } => {
                    if let Some(peer) = self.peers.get_mut(&subscriber) {
                        peer.unsubscribe(track);
                        offers_due.push(subscriber);
                    }
                }
                Output::RequestKeyframe { track } => self.request_keyframe(key, track, now),
                Output::LegClosed { leg } => {
                    host.legs.remove(&leg);
                }
            }
        }
        offers_due.dedup();
        for id in offers_due {
            self.offer_if_due(id, now);
        }
    }

    fn request_keyframe(&mut self, key: RoomKey, track: TrackId, now: Instant) {
        let Some(desc) = self.rooms.get(&key).and_then(|h| h.tracks.get(&track)) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&desc.info.participant_id) else {
            return;
        };
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: desc.ssrc,
        };
        if let Some(mut receiver) = peer.pc.rtp_receiver(desc.receiver) {
            if receiver.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                Metrics::inc(&self.metrics.keyframe_requests_to_publishers);
            }
        }
        touch(&mut self.touched, peer);
    }

    /// A track the participant publishes opened (its first packet arrived).
    pub(super) fn publish(&mut self, id: ParticipantId, init: RTCTrackEventInit, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.published.contains_key(&init.track_id) {
            // Another simulcast layer of a track already published: not routed yet.
            return;
        }
        let track_id = self.ids.track();
        let Some(mut receiver) = peer.pc.rtp_receiver(init.receiver_id) else {
            return;
        };
        let kind = match receiver.track().kind() {
            RtpCodecKind::Audio => MediaKind::Audio,
            _ => MediaKind::Video,
        };
        let Some(codec) = receiver.track().codec(init.ssrc).cloned() else {
            return;
        };
        let extensions: Vec<(u8, String)> = receiver
            .get_parameters()
            .rtp_parameters
            .header_extensions
            .iter()
            .map(|e| (e.id as u8, e.uri.clone()))
            .collect();
        let forwardable_extensions = ExtensionMask::of(
            extensions
                .iter()
                .filter(|(_, uri)| FORWARDED_EXTENSIONS.contains(&uri.as_str()))
                .map(|(id, _)| *id),
        );
        debug!(participant = %id, track = %track_id, %kind, codec = %codec.mime_type, "publishing");
        peer.published.insert(
            init.track_id.clone(),
            Published {
                track: track_id,
                ssrc: init.ssrc,
                forwardable_extensions,
            },
        );
        let key = peer.room;
        let Some(host) = self.rooms.get_mut(&key) else {
            return;
        };
        let desc = Arc::new(TrackDesc {
            info: TrackInfo {
                track_id,
                participant_id: id,
                kind,
            },
            codec,
            extensions,
            receiver: init.receiver_id,
            ssrc: init.ssrc,
        });
        let mime = Codec::from_mime(&desc.codec.mime_type);
        if host.room.publish(id, track_id, kind, mime).is_ok() {
            host.tracks.insert(track_id, desc);
        }
        self.drain_room_outputs(key, now);
    }

    pub(super) fn unpublish(&mut self, id: ParticipantId, rtc_track: &str, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(published) = peer.published.remove(rtc_track) else {
            return;
        };
        let key = peer.room;
        if let Some(host) = self.rooms.get_mut(&key) {
            host.room.unpublish(published.track);
            host.tracks.remove(&published.track);
        }
        self.drain_room_outputs(key, now);
    }
}
