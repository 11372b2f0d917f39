//! What the server sends one participant, seen as one transport: every packet gets a
//! transport-wide sequence number (the transport-cc header extension, stamped here and
//! not by rtc's interceptor, whose history costs too much; see `crate::bwe`), the
//! browser's transport-cc feedback feeds the connection's [`Estimator`], and padding
//! probes are sent on the 20 ms housekeeping tick when the room's allocator wants more
//! than the estimate gives (so probing adds no timer per packet).

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::convert_twcc;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtp;
use rtc::rtp::header::{Extension, Header};
use rtc::sansio::Protocol;

use super::retransmit::RetransmitLimits;
use super::shard::{touch, Shard};
use super::{DownlinkInfo, PublicationInfo};
use crate::bwe::{Estimator, ProbeController, SendHistory};
use crate::id::ParticipantId;
use crate::metrics::Metrics;
use crate::room::Room;

/// Padding packets carry their bulk in a header-extension element with this id, in the
/// two-byte form (RFC 8285): a padding-only RTP packet is all a receiver may drop
/// unread, and rtc pads payloads by at most 4 bytes. Browsers negotiate ids up to 14
/// (or a few more with extmap-allow-mixed), so 200 is never one they interpret.
const PADDING_EXTENSION_ID: u8 = 200;
static PADDING_BULK: [u8; 255] = [0; 255];
/// A padding packet's size on the wire, roughly (header, extensions, SRTP tag).
const PADDING_PACKET_BYTES: usize = 300;
/// At most this many padding packets per peer per tick (6 Mbit/s at 20 ms).
const MAX_PADDING_PER_TICK: usize = 50;
/// RTP profile value of the two-byte header-extension form.
const TWO_BYTE_PROFILE: u16 = 0x1000;
const ONE_BYTE_PROFILE: u16 = 0xBEDE;

/// Every 16-bit sequence number, big-endian, back to back (128 KiB, built at compile time).
static SEQUENCE_BYTES: [u8; 1 << 17] = {
    let mut table = [0u8; 1 << 17];
    let mut i = 0;
    while i < 1 << 16 {
        table[2 * i] = (i >> 8) as u8;
        table[2 * i + 1] = i as u8;
        i += 1;
    }
    table
};

#[derive(Debug, Default)]
pub struct DownlinkState {
    /// The connection's transport-cc extension id; `None` when not negotiated (then
    /// nothing is stamped and there is no estimate).
    pub twcc_ext_id: Option<u8>,
    pub history: SendHistory,
    pub estimator: Estimator,
    pub probe: ProbeController,
    pub padding_packets: u64,
    /// What NACK resends may use, shared with the connection's interceptor.
    pub retransmit_limits: RetransmitLimits,
    /// The last estimate cut the probe controller was told of.
    seen_decrease: Option<Instant>,
}

impl DownlinkState {
    /// Stamps a packet about to be sent with the next transport-wide sequence number.
    pub fn stamp(&mut self, h: &mut Header, payload_len: usize, now: Instant) {
        let Some(id) = self.twcc_ext_id else {
            return;
        };
        // Header, extension block (each element's bytes and its 1-2 byte header, the
        // transport-cc one included), payload, SRTP tag. Padding carries its bulk in an
        // extension element, so the elements must be counted, not guessed.
        let extensions: usize = h.extensions.iter().map(|e| e.payload.len() + 2).sum();
        let size = 12 + 4 + extensions + 4 + payload_len + 16;
        let probe = self.probe.active().map(|c| c.id);
        let seq = self.history.record(size, probe, now);
        if !h.extension {
            h.extension = true;
            h.extension_profile = ONE_BYTE_PROFILE;
        }
        let at = seq as usize * 2;
        h.extensions.push(Extension {
            id,
            // A slice of a static table: no allocation per packet.
            payload: Bytes::from_static(&SEQUENCE_BYTES[at..at + 2]),
        });
    }
}

impl Shard {
    /// A participant's transport-cc feedback on what the server sent it.
    pub(super) fn transport_feedback(
        &mut self,
        id: ParticipantId,
        fb: &TransportLayerCc,
        now: Instant,
    ) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        Metrics::inc(&self.metrics.twcc_feedback_in);
        let acks = convert_twcc(fb);
        let _span = tracing::debug_span!("downlink", participant = %id).entered();
        let d = &mut peer.downlink;
        // A packet reported received without a time says nothing about delay, and it
        // is not lost either: left out.
        let reports = acks
            .iter()
            .filter(|a| !a.arrived || a.arrival.is_some())
            .map(|a| (a.sequence_number, a.arrival.filter(|_| a.arrived)));
        let estimate = d.estimator.on_feedback(&mut d.history, reports, now);
        d.retransmit_limits
            .set_from_estimate(estimate, d.estimator.inherent_loss);
        if let Some(host) = self.rooms.get_mut(&peer.room) {
            limit_room(&mut host.room, id, &d.estimator, now);
        }
    }

    /// On the housekeeping tick: starts, paces and finishes padding probes.
    pub(super) fn probe_tick(&mut self, tick: Duration, now: Instant) {
        let ids: Vec<ParticipantId> = self
            .peers
            .values()
            .filter(|p| p.downlink.twcc_ext_id.is_some() && p.downlink.estimator.feedbacks > 0)
            .map(|p| p.id)
            .collect();
        for id in ids {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let Some(host) = self.rooms.get_mut(&peer.room) else {
                continue;
            };
            let Some(downlink) = host.room.downlink(id) else {
                continue;
            };
            let (wanted, allocated) = (downlink.wanted_bps, downlink.allocated_bps);
            let d = &mut peer.downlink;
            if let Some(t) = d.estimator.last_decrease() {
                if d.seen_decrease != Some(t) {
                    d.seen_decrease = Some(t);
                    d.probe.congestion(t);
                }
            }
            if let Some(cluster) = d.probe.take_finished(now) {
                let _span = tracing::debug_span!("downlink", participant = %id).entered();
                d.estimator.finish_probe(cluster, now);
                d.retransmit_limits
                    .set_from_estimate(d.estimator.bitrate(), d.estimator.inherent_loss);
                limit_room(&mut host.room, id, &d.estimator, now);
            }
            if d.probe
                .maybe_start(d.estimator.bitrate(), wanted, now)
                .is_some()
            {
                Metrics::inc(&self.metrics.probe_clusters);
            }
            let bytes = d.probe.padding_bytes(allocated, tick, now);
            let count = bytes
                .div_ceil(PADDING_PACKET_BYTES)
                .min(MAX_PADDING_PER_TICK);
            if count == 0 {
                continue;
            }
            let Some(header) = host.room.padding(id, count as u16) else {
                continue;
            };
            for i in 0..count {
                let mut h = Header {
                    version: 2,
                    padding: true,
                    payload_type: header.payload_type,
                    sequence_number: header.sequence_number.wrapping_add(i as u16),
                    timestamp: header.timestamp,
                    ssrc: header.ssrc,
                    extension: true,
                    extension_profile: TWO_BYTE_PROFILE,
                    extensions: vec![Extension {
                        id: PADDING_EXTENSION_ID,
                        payload: Bytes::from_static(&PADDING_BULK),
                    }],
                    ..Default::default()
                };
                d.stamp(&mut h, 0, now);
                let written = peer.pc.handle_write(TaggedRTCMessage {
                    now,
                    message: RTCMessage::RtpPacket(
                        String::new(),
                        rtp::Packet {
                            header: h,
                            payload: Bytes::new(),
                        },
                    ),
                });
                if written.is_ok() {
                    d.padding_packets += 1;
                    Metrics::inc(&self.metrics.padding_packets_out);
                }
            }
            touch(&mut self.touched, peer);
        }
    }

    pub(super) fn downlink_infos(&self) -> Vec<DownlinkInfo> {
        self.peers
            .values()
            .map(|p| {
                let room = self.rooms.get(&p.room).map(|h| &h.room);
                let d = room.and_then(|r| r.downlink(p.id));
                DownlinkInfo {
                    participant_id: p.id,
                    estimate_bps: (p.downlink.estimator.feedbacks > 0)
                        .then(|| p.downlink.estimator.bitrate()),
                    wanted_bps: d.map_or(0, |d| d.wanted_bps),
                    allocated_bps: d.map_or(0, |d| d.allocated_bps),
                    probes: p.downlink.probe.started,
                    twcc_feedbacks: p.downlink.estimator.feedbacks,
                    loss: p.downlink.estimator.loss,
                    inherent_loss: p.downlink.estimator.inherent_loss,
                    settled_loss: p.downlink.estimator.settled_loss,
                    send_sections: p.send_sections(),
                    uplink_feedback: p.uplink_feedback.counts(),
                    layer_switches: room.map_or(0, |r| r.layer_switches(p.id)),
                    legs: room.map_or_else(Vec::new, |r| r.leg_layers(p.id)),
                    leg_counts: room.map_or_else(Vec::new, |r| r.leg_counts(p.id)),
                }
            })
            .collect()
    }

    pub(super) fn publication_infos(&self, now: Instant) -> Vec<PublicationInfo> {
        let mut out = Vec::new();
        for peer in self.peers.values() {
            let Some(room) = self.rooms.get(&peer.room).map(|h| &h.room) else {
                continue;
            };
            for p in peer.published.values() {
                let layers = p
                    .rids
                    .iter()
                    .enumerate()
                    .map(|(layer, rid)| {
                        let (bps, size, active) = room.layer_state(p.track, layer, now);
                        (rid.clone(), bps, size, active)
                    })
                    .collect();
                out.push(PublicationInfo {
                    track_id: p.track,
                    participant_id: peer.id,
                    layers,
                });
            }
        }
        out
    }
}

/// Tells the room what it may spend on `subscriber`'s downlink, or that it is not
/// limited ([`Estimator::limits_allocation`]).
fn limit_room(room: &mut Room, subscriber: ParticipantId, estimator: &Estimator, now: Instant) {
    if estimator.limits_allocation() {
        room.set_estimates(
            subscriber,
            estimator.allocatable(),
            estimator.allocatable_before_headroom(),
            now,
        );
    } else {
        room.clear_estimate(subscriber);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_table_spells_every_number() {
        for seq in [0u16, 1, 255, 256, 0x1234, u16::MAX] {
            let at = seq as usize * 2;
            assert_eq!(SEQUENCE_BYTES[at..at + 2], seq.to_be_bytes());
        }
    }
}
