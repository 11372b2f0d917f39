//! One synthetic participant's connection without its socket: a sans-I/O rtc
//! `RTCPeerConnection` that publishes paced synthetic media and counts what it receives.
//! The load tester's media threads ([`super::pool`]) put a UDP socket under each; the
//! scenario harness ([`super::sim`]) puts a virtual network under them instead.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::interceptor::Slot;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::configure_twcc_sender_only;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use switchyard::engine::feedback::KeyframeRequestForwarder;

use super::media::{encode, now_micros, MediaPlan};
use super::participant::{Shared, SyntheticError};
use super::peer::{media_engine, KEYFRAME_FORWARDER_SLOT};

fn peer_err(e: impl std::fmt::Display) -> SyntheticError {
    SyntheticError::Peer(e.to_string())
}

/// A client connection as the synthetic participants build it: rtc's default codecs,
/// the server's interceptor set (NACK, reports, transport-cc feedback), transport-wide
/// numbers on what it sends (as browsers do), one interceptor that lets keyframe
/// requests through to the sender, no mDNS.
pub fn build_pc(now: Instant) -> Result<RTCPeerConnection, SyntheticError> {
    let mut engine = media_engine().map_err(peer_err)?;
    let registry = switchyard::engine::build::interceptor_registry(
        &mut engine,
        switchyard::engine::build::CLIENT_NACK_INTERVAL,
    )
    .map_err(peer_err)?;
    // A browser stamps what it sends with transport-wide numbers for its own estimate.
    let registry = configure_twcc_sender_only(registry, &mut engine)
        .map_err(peer_err)?
        .with(
            Slot::from(KEYFRAME_FORWARDER_SLOT),
            KeyframeRequestForwarder::default(),
        );
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    RTCPeerConnectionBuilder::new()
        .with_setting_engine(settings)
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(peer_err)
}

/// A sending track of a client: its sender, its layers and (once negotiated) its payload
/// type and the ids of the mid/rid header extensions.
pub struct Sending {
    pub sender: RTCRtpSenderId,
    /// One per encoding, lowest first (one without simulcast).
    pub layers: Vec<LayerSend>,
    negotiated: Option<Negotiated>,
}

/// One encoding of a sending track: its SSRC, rid and numbering.
pub struct LayerSend {
    pub ssrc: u32,
    pub rid: String,
    seq: u16,
    ts: u32,
}

#[derive(Clone)]
struct Negotiated {
    payload_type: u8,
    /// (mid extension id, this sender's mid), (rid extension id)
    mid: Option<(u8, Bytes)>,
    rid_ext: Option<u8>,
}

impl Sending {
    /// `layers`: (SSRC, rid) per encoding, lowest first; rid empty without simulcast.
    pub fn new(sender: RTCRtpSenderId, layers: Vec<(u32, String)>) -> Sending {
        Sending {
            sender,
            layers: layers
                .into_iter()
                .map(|(ssrc, rid)| LayerSend {
                    ssrc,
                    rid,
                    seq: rand::random(),
                    ts: rand::random(),
                })
                .collect(),
            negotiated: None,
        }
    }
}

/// One synthetic participant's connection, its media plan and what it received.
pub struct Endpoint {
    pub pc: RTCPeerConnection,
    /// The address its one host candidate names.
    pub local: SocketAddr,
    pub shared: Arc<Shared>,
    pub plan: MediaPlan,
    pub video: Option<Sending>,
    pub audio: Option<Sending>,
    /// rtc's track id of each received track -> (publisher, "audio" | "video").
    remote: HashMap<String, (String, &'static str)>,
    pub connected: bool,
    frame: u64,
    force_keyframe: bool,
    /// Simulcast layers (rids) the server asked to pause (dynacast); all sent when empty.
    pub paused_rids: Vec<String>,
    /// Simulcast layers the publisher itself stopped (as a browser's encoder does when
    /// its own uplink estimate falls), whatever the server asks.
    pub stopped_rids: Vec<String>,
}

impl Endpoint {
    pub fn new(
        pc: RTCPeerConnection,
        local: SocketAddr,
        shared: Arc<Shared>,
        plan: MediaPlan,
    ) -> Endpoint {
        Endpoint {
            pc,
            local,
            shared,
            plan,
            video: None,
            audio: None,
            remote: HashMap::new(),
            connected: false,
            frame: 0,
            force_keyframe: false,
            paused_rids: Vec::new(),
            stopped_rids: Vec::new(),
        }
    }

    /// Adds the client's address as its one host candidate, its tracks (or receive-only
    /// transceivers), and makes the first offer.
    pub fn prepare(&mut self, now: Instant) -> Result<String, SyntheticError> {
        let plan = self.plan;
        let host = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".into(),
                address: self.local.ip().to_string(),
                port: self.local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(peer_err)?;
        let init = RTCIceCandidate::from(&host).to_json().map_err(peer_err)?;
        self.pc.add_local_candidate(init).map_err(peer_err)?;
        // The codec each encoding is meant for: rtc binds a sender's streams to its
        // interceptors (NACK responder, sender reports) only when the encoding names a
        // codec it negotiated; without it the client never answered a NACK.
        let video_codec = RTCRtpCodec {
            mime_type: plan.video.map_or("video/VP8", |v| v.mime()).to_string(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: match plan.video {
                Some(crate::media::Video::H264) => {
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into()
                }
                _ => String::new(),
            },
            rtcp_feedback: vec![],
        };
        let audio_codec = RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        };
        let mut add =
            |kind: RtpCodecKind, label: &str, rids: &[&str]| -> Result<Sending, SyntheticError> {
                let codec = match kind {
                    RtpCodecKind::Video => video_codec.clone(),
                    _ => audio_codec.clone(),
                };
                let layers: Vec<(u32, String)> = rids
                    .iter()
                    .map(|rid| (rand::random::<u32>(), rid.to_string()))
                    .collect();
                let encodings = layers
                    .iter()
                    .map(|(ssrc, rid)| RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(*ssrc),
                            rid: rid.clone(),
                            ..Default::default()
                        },
                        codec: codec.clone(),
                        ..Default::default()
                    })
                    .collect();
                let track = MediaStreamTrack::new(
                    "local".into(),
                    format!("{label}-{}", layers[0].0),
                    label.into(),
                    kind,
                    encodings,
                );
                let sender = self.pc.add_track(track).map_err(peer_err)?;
                Ok(Sending::new(sender, layers))
            };
        let video_rids: &[&str] = if plan.simulcast {
            &["q", "h", "f"]
        } else {
            &[""]
        };
        let video = plan
            .video
            .map(|_| add(RtpCodecKind::Video, "video", video_rids))
            .transpose()?;
        let audio = plan
            .audio
            .then(|| add(RtpCodecKind::Audio, "audio", &[""]))
            .transpose()?;
        if video.is_none() && audio.is_none() {
            for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
                let init = RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                };
                self.pc
                    .add_transceiver_from_kind(kind, Some(init))
                    .map_err(peer_err)?;
            }
        }
        self.video = video;
        self.audio = audio;
        let offer = self.pc.create_offer(None).map_err(peer_err)?;
        self.pc
            .set_local_description(now, offer.clone())
            .map_err(peer_err)?;
        Ok(offer.sdp)
    }

    /// Answers a server offer.
    pub fn answer(&mut self, sdp: String, now: Instant) -> Result<String, SyntheticError> {
        let offer = RTCSessionDescription::offer(sdp).map_err(peer_err)?;
        self.pc
            .set_remote_description(now, offer)
            .map_err(peer_err)?;
        let answer = self.pc.create_answer(None).map_err(peer_err)?;
        self.pc
            .set_local_description(now, answer.clone())
            .map_err(peer_err)?;
        Ok(answer.sdp)
    }

    /// Applies the server's answer to our offer.
    pub fn apply_answer(&mut self, sdp: String, now: Instant) -> Result<(), SyntheticError> {
        let answer = RTCSessionDescription::answer(sdp).map_err(peer_err)?;
        self.pc
            .set_remote_description(now, answer)
            .map_err(peer_err)
    }

    /// One datagram from `from` into the connection.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(datagram),
        };
        let _ = self.pc.handle_read(msg);
    }

    /// Handles the connection's events and counts what it received.
    pub fn settle(&mut self) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => {
                    self.connected = s == RTCPeerConnectionState::Connected;
                    self.shared
                        .connected
                        .store(self.connected, Ordering::Relaxed);
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let kind = match self.pc.rtp_receiver(init.receiver_id) {
                        Some(r) if r.track().kind() == RtpCodecKind::Video => "video",
                        _ => "audio",
                    };
                    // Switchyard names each stream after its publisher.
                    let publisher = init.stream_ids.first().cloned().unwrap_or_default();
                    self.remote.insert(init.track_id, (publisher, kind));
                }
                _ => {}
            }
        }
        while let Some(msg) = self.pc.poll_read() {
            match msg.message {
                RTCMessage::RtpPacket(track, p) => {
                    if let Some((publisher, kind)) = self.remote.get(&track) {
                        let key = (publisher.clone(), kind.to_string());
                        let h = &p.header;
                        super::participant::lock(&self.shared.received)
                            .entry(key)
                            .or_default()
                            .record(
                                h.ssrc,
                                h.payload_type,
                                h.sequence_number,
                                h.timestamp,
                                &p.payload,
                            );
                    }
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    let nacks = packets
                        .iter()
                        .filter(|p| p.as_any().is::<TransportLayerNack>());
                    self.shared
                        .nacks_received
                        .fetch_add(nacks.count() as u64, Ordering::Relaxed);
                    if packets
                        .iter()
                        .any(|p| p.as_any().is::<PictureLossIndication>())
                    {
                        self.shared.plis_received.fetch_add(1, Ordering::Relaxed);
                        self.force_keyframe = true;
                    }
                }
                _ => {}
            }
        }
    }

    /// One 10 ms tick of media: audio and video frames at the plan's rates (each
    /// simulcast layer its own share: the lowest one packet a frame, the middle a third
    /// of the full layer's).
    pub fn send_media(&mut self, tick: u64, now: Instant) {
        if !self.connected || self.shared.stop_media.load(Ordering::Relaxed) {
            return;
        }
        if due(tick, self.plan.audio_pps) && self.audio.is_some() {
            let counter = self.shared.audio_sent.fetch_add(1, Ordering::Relaxed);
            let payload = encode(
                [0xfc, 0xff],
                counter,
                now_micros(),
                self.plan.audio_packet_bytes,
            );
            self.write(false, 0, true, payload, now, 960);
        }
        let (Some(codec), Some(video)) = (self.plan.video, self.video.as_ref()) else {
            return;
        };
        if !due(tick, self.plan.video_fps) {
            return;
        }
        let key = self
            .frame
            .is_multiple_of(self.plan.keyframe_interval_frames)
            || std::mem::take(&mut self.force_keyframe);
        let per_layer = self.plan.layer_packets_per_frame();
        let layers = video.layers.len().min(per_layer.len());
        let paused: Vec<bool> = video
            .layers
            .iter()
            .map(|l| {
                !l.rid.is_empty()
                    && (self.paused_rids.contains(&l.rid) || self.stopped_rids.contains(&l.rid))
            })
            .collect();
        for (layer, &per_frame) in per_layer.iter().enumerate().take(layers) {
            if paused[layer] {
                continue;
            }
            for i in 0..per_frame {
                let counter = self.shared.video_sent.fetch_add(1, Ordering::Relaxed);
                let head = codec.payload_head(i == 0, key);
                let payload = encode(head, counter, now_micros(), self.plan.video_packet_bytes);
                let last = i + 1 == per_frame;
                self.write(true, layer, last, payload, now, if last { 3000 } else { 0 });
            }
        }
        self.frame += 1;
    }

    /// Sends one packet of `layer` and advances its numbering (`ts_step` after it).
    fn write(
        &mut self,
        video: bool,
        layer: usize,
        marker: bool,
        payload: Vec<u8>,
        now: Instant,
        ts_step: u32,
    ) {
        let mime = match video {
            true => self.plan.video.map_or("video/VP8", |v| v.mime()),
            false => "audio/opus",
        };
        let Some(sending) = (if video {
            &mut self.video
        } else {
            &mut self.audio
        }) else {
            return;
        };
        let negotiated = match &sending.negotiated {
            Some(n) => n.clone(),
            None => {
                let Some(n) = negotiated(&mut self.pc, sending.sender, mime) else {
                    return;
                };
                sending.negotiated = Some(n.clone());
                n
            }
        };
        let simulcast = sending.layers.len() > 1;
        let Some(l) = sending.layers.get_mut(layer) else {
            return;
        };
        let mut header = rtp::header::Header {
            version: 2,
            marker,
            payload_type: negotiated.payload_type,
            sequence_number: l.seq,
            timestamp: l.ts,
            ssrc: l.ssrc,
            ..Default::default()
        };
        l.seq = l.seq.wrapping_add(1);
        l.ts = l.ts.wrapping_add(ts_step);
        // A browser sends mid and rid until the server acknowledges the SSRC; sending
        // them always is allowed and keeps the synthetic publisher simple.
        if simulcast {
            if let (Some((id, mid)), Some(rid_id)) = (&negotiated.mid, negotiated.rid_ext) {
                header.extension = true;
                header.extension_profile = 0xBEDE;
                header.extensions = vec![
                    rtp::header::Extension {
                        id: *id,
                        payload: mid.clone(),
                    },
                    rtp::header::Extension {
                        id: rid_id,
                        payload: Bytes::copy_from_slice(l.rid.as_bytes()),
                    },
                ];
            }
        }
        let packet = rtp::Packet {
            header,
            payload: Bytes::from(payload),
        };
        if let Some(mut sender) = self.pc.rtp_sender(sending.sender) {
            let _ = sender.write_rtp(now, packet);
        }
    }
}

/// What a sender negotiated: the payload type of the codec we send (H.264: packetization
/// mode 1, what the synthetic packets are), and the mid/rid extension ids and our mid.
fn negotiated(
    pc: &mut RTCPeerConnection,
    sender: RTCRtpSenderId,
    mime: &str,
) -> Option<Negotiated> {
    let mid = pc
        .get_transceivers()
        .collect::<Vec<_>>()
        .into_iter()
        .find_map(|t| {
            let t = pc.rtp_transceiver(t)?;
            (t.sender() == Some(sender))
                .then(|| t.mid().clone())
                .flatten()
        });
    let mut sender = pc.rtp_sender(sender)?;
    let params = &sender.get_parameters().rtp_parameters;
    let payload_type = params
        .codecs
        .iter()
        .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .max_by_key(|c| c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1"))
        .map(|c| c.payload_type)?;
    let ext = |uri: &str| {
        params
            .header_extensions
            .iter()
            .find(|e| e.uri == uri)
            .map(|e| e.id as u8)
    };
    let mid_ext = ext("urn:ietf:params:rtp-hdrext:sdes:mid");
    let rid_ext = ext("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
    Some(Negotiated {
        payload_type,
        mid: mid_ext.zip(mid.map(Bytes::from)),
        rid_ext,
    })
}

/// Whether an event `per_second` times a second (at most 100) falls in 10 ms tick `tick`:
/// spread evenly, so 30/s alternates 3- and 4-tick gaps.
pub fn due(tick: u64, per_second: u32) -> bool {
    let rate = u64::from(per_second.min(100));
    (tick * rate) / 100 != ((tick + 1) * rate) / 100
}
