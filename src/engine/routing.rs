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
use tracing::{debug, info};

use super::extensions::AUDIO_LEVEL_URI;
use super::held::HeldPackets;
use super::peer::{source_of, ExtensionMask, Peer, Published, RoomKey, TrackDesc};
use super::rewrite::apply_rewrite;
use super::shard::{touch, Shard};
use super::{EngineError, PeerOutput};
use crate::id::{LegId, MediaKind, ParticipantId, TrackId};
use crate::metrics::Metrics;
use crate::room::rewrite::FORWARDED_EXTENSIONS;
use crate::room::{Codec, Forward, Output, Room, RtpIn, TrackInfo};
use crate::webhook::{EventKind, WebhookEvent};

/// Counted per forwarded packet for the bitrate figure (extensions left out).
const RTP_HEADER_BYTES: u64 = 12;

/// Decrypted RTP from a publisher, waiting for its room.
pub struct Inbound {
    pub room: RoomKey,
    pub track: TrackId,
    /// Its simulcast layer (0 without simulcast).
    pub layer: usize,
    pub audio_level: Option<u8>,
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
    /// An administrator's option: how long the room stays open with nobody in it.
    pub empty_timeout: Option<std::time::Duration>,
    /// Since when it has been empty (with an `empty_timeout`).
    pub empty_since: Option<Instant>,
    /// Its chat: the history and each sender's rate limit.
    pub chat: crate::room::chat::Chat,
    /// Packets of layers a leg waits for a keyframe of.
    held: HeldPackets,
}

impl RoomHost {
    pub fn new(name: String, max_participants: usize) -> RoomHost {
        RoomHost {
            name,
            room: Room::new(max_participants),
            tracks: HashMap::new(),
            legs: HashMap::new(),
            forwards: Vec::with_capacity(64),
            empty_timeout: None,
            empty_since: None,
            chat: Default::default(),
            held: HeldPackets::default(),
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
            layer,
            audio_level,
            packet,
        } in inbound.drain(..)
        {
            Metrics::inc(&self.metrics.rtp_in);
            let Some(host) = self.rooms.get_mut(&room) else {
                Metrics::inc(&self.metrics.rtp_dropped_no_room);
                continue;
            };
            let rtp_in = RtpIn {
                layer,
                sequence_number: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                payload: &packet.payload,
                audio_level,
            };
            host.forwards.clear();
            let waited_for = host.room.route_rtp(track, rtp_in, now, &mut host.forwards);
            for f in &host.forwards {
                send_on_leg(
                    &mut self.peers,
                    &mut self.touched,
                    &self.metrics,
                    host,
                    f,
                    &packet,
                    now,
                );
                if f.starts_layer {
                    // Late keyframe start: what came before it, numbered after it.
                    let seq = packet.header.sequence_number;
                    for held in host.held.after(track, layer, seq) {
                        let h = &held.header;
                        let Some(header) = host.room.replay(
                            f.leg,
                            layer,
                            h.sequence_number,
                            h.timestamp,
                            &held.payload,
                            now,
                        ) else {
                            continue;
                        };
                        let replayed = Forward {
                            leg: f.leg,
                            header,
                            starts_layer: false,
                        };
                        send_on_leg(
                            &mut self.peers,
                            &mut self.touched,
                            &self.metrics,
                            host,
                            &replayed,
                            held,
                            now,
                        );
                        Metrics::inc(&self.metrics.rtp_replayed_after_keyframe);
                    }
                }
            }
            host.held.note(track, layer, waited_for, &packet);
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
                        if !peer.notify(event) && peer.resync_due {
                            Metrics::inc(&self.metrics.notifications_dropped);
                        }
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
                Output::RequestKeyframe { track, layer } => {
                    self.request_keyframe(key, track, layer, now)
                }
                Output::PublisherLayers {
                    publisher,
                    track,
                    active,
                } => {
                    if let Some(peer) = self.peers.get_mut(&publisher) {
                        if let Some(p) = peer.publication(track) {
                            let rids = p
                                .rids
                                .iter()
                                .zip(active)
                                .filter(|(_, on)| *on)
                                .map(|(rid, _)| rid.clone())
                                .collect();
                            let mid = p.mid.clone();
                            Metrics::inc(&self.metrics.dynacast_updates);
                            peer.tell(PeerOutput::Layers { mid, active: rids });
                        }
                    }
                }
                Output::LegClosed { leg, resume } => {
                    if let Some(subscriber) = host.legs.remove(&leg) {
                        if let Some(peer) = self.peers.get_mut(&subscriber) {
                            peer.leg_closed(leg, resume);
                        }
                    }
                }
            }
        }
        offers_due.dedup();
        for id in offers_due {
            self.offer_if_due(id, now);
        }
    }

    fn request_keyframe(&mut self, key: RoomKey, track: TrackId, layer: usize, now: Instant) {
        let Some(desc) = self.rooms.get(&key).and_then(|h| h.tracks.get(&track)) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&desc.info.participant_id) else {
            return;
        };
        let Some(&(media_ssrc, _)) = peer
            .publication(track)
            .and_then(|p| p.ssrcs.iter().find(|(_, l)| *l == layer))
        else {
            return; // that layer has not arrived yet: its first frame is a keyframe
        };
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        if let Some(mut receiver) = peer.pc.rtp_receiver(desc.receiver) {
            if receiver.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                // Throttled per layer (at most one per 400 ms), so not per packet.
                tracing::debug!(%track, layer, "keyframe request to the publisher");
                Metrics::inc(&self.metrics.keyframe_requests_to_publishers);
            }
        }
        touch(&mut self.touched, peer);
    }

    /// A track the participant publishes opened (its first packet arrived), or another
    /// simulcast layer of one did.
    pub(super) fn publish(&mut self, id: ParticipantId, init: RTCTrackEventInit, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        // A layer whose SSRC the offer declared is bound without reading its rid from
        // the packet; the track knows it from the SDP then.
        let rid = init
            .rid
            .clone()
            .or_else(|| {
                let receiver = peer.pc.rtp_receiver(init.receiver_id)?;
                receiver.track().rid(init.ssrc).cloned()
            })
            .unwrap_or_default();
        if let Some(published) = peer.published.get_mut(&init.track_id) {
            if let Some(layer) = published.rids.iter().position(|r| *r == rid) {
                if !published.ssrcs.iter().any(|(s, _)| *s == init.ssrc) {
                    published.ssrcs.push((init.ssrc, layer));
                }
            }
            return;
        }
        let track_id = self.ids.track();
        let mid = peer
            .read_transceivers(|t| {
                (t.receiver() == Some(init.receiver_id))
                    .then(|| t.mid().clone().unwrap_or_default())
            })
            .pop()
            .unwrap_or_default();
        let named = peer.sources.get(&mid).copied();
        let Some(mut receiver) = peer.pc.rtp_receiver(init.receiver_id) else {
            return;
        };
        let kind = match receiver.track().kind() {
            RtpCodecKind::Audio => MediaKind::Audio,
            _ => MediaKind::Video,
        };
        let source = source_of(named, kind);
        if !peer.grants.may_publish(source) {
            // Not routed, and said once: the client's offer is answered (refusing the
            // m-line would break its bundle), but nobody receives what it sends.
            if peer.refused_tracks.insert(init.track_id.clone()) {
                info!(participant = %id, %kind, source = source.name(), "publish refused: not granted");
                peer.tell(PeerOutput::Error(EngineError::Forbidden(format!(
                    "your token does not allow publishing {kind} ({})",
                    source.name()
                ))));
            }
            return;
        }
        let Some(codec) = receiver.track().codec(init.ssrc).cloned() else {
            return;
        };
        let rids = layer_order(
            receiver
                .track()
                .codings()
                .iter()
                .map(|c| c.rtp_coding_parameters.rid.clone())
                .filter(|rid| !rid.is_empty())
                .collect(),
        );
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
        let audio_level_id = extensions
            .iter()
            .find(|(_, uri)| uri == AUDIO_LEVEL_URI)
            .map(|(id, _)| *id);
        let first_layer = rids.iter().position(|r| *r == rid).unwrap_or(0);
        debug!(participant = %id, track = %track_id, %kind, codec = %codec.mime_type, layers = rids.len(), "publishing");
        let layer_count = rids.len().max(1);
        peer.published.insert(
            init.track_id.clone(),
            Published {
                track: track_id,
                source,
                mid,
                rids: if rids.is_empty() {
                    vec![String::new()]
                } else {
                    rids
                },
                ssrcs: vec![(init.ssrc, first_layer)],
                audio_level_id,
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
                source,
            },
            codec,
            extensions,
            receiver: init.receiver_id,
        });
        let mime = Codec::from_mime(&desc.codec.mime_type);
        if host
            .room
            .publish_from(id, track_id, kind, source, mime, layer_count, now)
            .is_ok()
        {
            let event = WebhookEvent::for_track(EventKind::TrackPublished, &host.name, &desc.info);
            self.settings.webhooks.emit(event);
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
            host.held.forget_track(published.track);
            if let Some(desc) = host.tracks.remove(&published.track) {
                let event =
                    WebhookEvent::for_track(EventKind::TrackUnpublished, &host.name, &desc.info);
                self.settings.webhooks.emit(event);
            }
        }
        self.drain_room_outputs(key, now);
    }
}

/// Writes `packet`, rewritten for the leg `f`, into that leg's connection.
fn send_on_leg(
    peers: &mut HashMap<ParticipantId, Peer>,
    touched: &mut Vec<ParticipantId>,
    metrics: &Metrics,
    host: &RoomHost,
    f: &Forward,
    packet: &rtp::Packet,
    now: Instant,
) {
    // A leg the room forwards on but the shard has closed, or whose subscriber left,
    // in the same round.
    let Some(subscriber) = host.legs.get(&f.leg).and_then(|s| peers.get_mut(s)) else {
        Metrics::inc(&metrics.rtp_dropped_no_leg);
        return;
    };
    if !subscriber.connected_once {
        // Its DTLS has not finished: rtc would drop the packet for want of SRTP keys,
        // with a warning, and report success.
        Metrics::inc(&metrics.rtp_dropped_not_connected);
        return;
    }
    let mut copy = copy_for_leg(packet);
    apply_rewrite(&mut copy.header, &f.header);
    if let Some(pictures) = f.header.vp8 {
        // The payload is shared by every leg: a leg that renumbers gets its own copy.
        let mut payload = bytes::BytesMut::from(&copy.payload[..]);
        pictures.write(&mut payload);
        copy.payload = payload.freeze();
    }
    subscriber
        .downlink
        .stamp(&mut copy.header, copy.payload.len(), now);
    let bytes = copy.payload.len() as u64 + RTP_HEADER_BYTES;
    // Straight into the connection's write pipeline. `write_rtp` would check the SSRC,
    // payload type and extension ids against a parameter set it rebuilds for every
    // packet; the leg's rewrite already guarantees all three (they come from this
    // sender's negotiated parameters). rtc ignores the track id here, so an empty one
    // costs no allocation.
    let written = subscriber.pc.handle_write(TaggedRTCMessage {
        now,
        message: RTCMessage::RtpPacket(String::new(), copy),
    });
    match written {
        Ok(()) => {
            Metrics::inc(&metrics.rtp_forwarded);
            metrics.rtp_forwarded_bytes.fetch_add(bytes, Relaxed);
        }
        Err(_) => Metrics::inc(&metrics.rtp_write_errors),
    }
    touch(touched, subscriber);
}

/// A leg's copy of a packet, with room for the transport-cc extension it gets stamped
/// with (a plain clone would size the extension list exactly, and the push would then
/// reallocate it for every packet on every leg).
fn copy_for_leg(packet: &rtp::Packet) -> rtp::Packet {
    let h = &packet.header;
    let mut extensions = Vec::with_capacity(h.extensions.len() + 1);
    extensions.extend(h.extensions.iter().cloned());
    rtp::Packet {
        header: rtp::header::Header {
            version: h.version,
            padding: h.padding,
            extension: h.extension,
            marker: h.marker,
            payload_type: h.payload_type,
            sequence_number: h.sequence_number,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
            csrc: h.csrc.clone(),
            extension_profile: h.extension_profile,
            extensions,
            extensions_padding: h.extensions_padding,
        },
        payload: packet.payload.clone(),
    }
}

/// Simulcast layers lowest first. The web client (and LiveKit's) names them q, h and f;
/// other names keep the order of the offer, which lists the encodings as the sender
/// declared them (lowest first, by convention).
fn layer_order(mut rids: Vec<String>) -> Vec<String> {
    let rank = |r: &str| ["q", "h", "f"].iter().position(|x| *x == r);
    if rids.iter().all(|r| rank(r).is_some()) {
        rids.sort_by_key(|r| rank(r));
    }
    rids.truncate(crate::room::producer::MAX_LAYERS);
    rids
}

#[cfg(test)]
mod tests {
    use super::layer_order;

    #[test]
    fn layers_are_ordered_lowest_first() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(layer_order(v(&["f", "q", "h"])), v(&["q", "h", "f"]));
        assert_eq!(
            layer_order(v(&["lo", "mid", "hi"])),
            v(&["lo", "mid", "hi"])
        );
        assert_eq!(layer_order(v(&["a", "b", "c", "d"])).len(), 3);
    }
}
