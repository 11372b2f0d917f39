//! A headless participant: webrtc-rs PeerConnection + signaling WebSocket, acting as the
//! polite peer, publishing synthetic media and counting what it receives per publisher.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::{RTCSdpType, RTCSessionDescription};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{json, Value};
use switchyard::config::{MediaConfig, PortRange};
use switchyard::rtc::peer::build_peer;
use switchyard::rtc::PortAllocator;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSignalingState,
};

pub const VP8_PT: u8 = 96;
pub const H264_PT: u8 = 102;
pub const OPUS_PT: u8 = 111;

/// The video codec a test participant publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Video {
    Vp8,
    H264,
}

impl Video {
    pub fn payload_type(self) -> u8 {
        match self {
            Video::Vp8 => VP8_PT,
            Video::H264 => H264_PT,
        }
    }
    /// First bytes of a frame's packets: a keyframe start, a continuation, an interframe.
    fn payload_head(self, first_of_frame: bool, key: bool) -> [u8; 2] {
        match (self, first_of_frame, key) {
            (Video::Vp8, true, true) => [0x10, 0x00],
            (Video::Vp8, true, false) => [0x10, 0x01],
            (Video::Vp8, false, _) => [0x00, 0x00],
            (Video::H264, true, true) => [0x7c, 0x85], // FU-A start of an IDR slice
            (Video::H264, true, false) => [0x7c, 0x81], // FU-A start of a non-IDR slice
            (Video::H264, false, _) => [0x7c, 0x01],   // FU-A continuation
        }
    }
}

/// What one subscriber saw of one (publisher, kind) stream.
#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    pub packets: u64,
    pub ssrcs: HashSet<u32>,
    pub payload_types: HashSet<u8>,
    pub last_seq: Option<u16>,
    /// Packets whose sequence number did not follow the previous one.
    pub seq_discontinuities: u64,
}

#[derive(Default)]
pub struct Shared {
    /// Keyed by (publisher participant id, "audio"/"video").
    pub received: Mutex<HashMap<(String, String), StreamStats>>,
    pub remote_tracks: Mutex<HashMap<(String, String), Arc<dyn TrackRemote>>>,
    pub messages: Mutex<Vec<Value>>,
    pub plis_received: AtomicU64,
    pub connected: AtomicBool,
    pub own_ssrcs: Mutex<Vec<u32>>,
    force_keyframe: AtomicBool,
    stop_media: AtomicBool,
}

impl Shared {
    pub fn packets_from(&self, publisher: &str, kind: &str) -> u64 {
        self.stats(publisher, kind).map_or(0, |s| s.packets)
    }
    pub fn stats(&self, publisher: &str, kind: &str) -> Option<StreamStats> {
        self.received
            .lock()
            .unwrap()
            .get(&(publisher.to_string(), kind.to_string()))
            .cloned()
    }
    pub fn saw_message(&self, pred: impl Fn(&Value) -> bool) -> bool {
        self.messages.lock().unwrap().iter().any(pred)
    }
}

pub struct Client {
    pub id: String,
    pub shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Value>,
    driver: tokio::task::JoinHandle<()>,
    pc: Arc<dyn PeerConnection>,
}

enum Event {
    Candidate(RTCIceCandidateInit),
    State(RTCPeerConnectionState),
    Track(Arc<dyn TrackRemote>),
}

struct Handler(mpsc::UnboundedSender<Event>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, e: RTCPeerConnectionIceEvent) {
        if let Ok(c) = e.candidate.to_json() {
            let _ = self.0.send(Event::Candidate(c));
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.0.send(Event::State(s));
    }
    async fn on_track(&self, t: Arc<dyn TrackRemote>) {
        let _ = self.0.send(Event::Track(t));
    }
}

fn local_track(kind: RtpCodecKind, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let label = if kind == RtpCodecKind::Video {
        "video"
    } else {
        "audio"
    };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "local".to_string(),
        format!("{label}-{ssrc}"),
        label.to_string(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            // No codec here: like a browser, offer every registered codec of the kind, so
            // the server can later send this participant any of them.
            ..Default::default()
        }],
    )))
}

impl Client {
    /// Joins `room` as `name`, publishes video+audio, and returns once `joined` arrived.
    pub async fn join(ws_url: &str, room: &str, name: &str) -> Client {
        Client::join_with(ws_url, room, name, Video::Vp8).await
    }

    pub async fn join_with(ws_url: &str, room: &str, name: &str, codec: Video) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("ws connect");
        let (mut ws_tx, mut ws_rx) = ws.split();
        ws_tx
            .send(Message::text(
                json!({"type":"join","room":room,"name":name}).to_string(),
            ))
            .await
            .unwrap();
        let joined = loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), ws_rx.next())
                .await
                .expect("joined in time")
                .expect("socket open")
                .expect("ws ok");
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_ne!(v["type"], "error", "join refused: {v}");
                if v["type"] == "joined" {
                    break v;
                }
            }
        };
        let id = joined["participant_id"].as_str().unwrap().to_string();

        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let media = MediaConfig {
            bind_ips: vec!["127.0.0.1".parse().unwrap()],
            advertise_ips: vec![],
            ports: PortRange { min: 0, max: 0 },
        };
        let pc = build_peer(&media, &PortAllocator::new(0, 0), Arc::new(Handler(ev_tx)))
            .await
            .expect("peer");
        let shared = Arc::new(Shared::default());
        shared.messages.lock().unwrap().push(joined);

        let video_ssrc = rand::random::<u32>();
        let audio_ssrc = rand::random::<u32>();
        *shared.own_ssrcs.lock().unwrap() = vec![video_ssrc, audio_ssrc];
        let video = local_track(RtpCodecKind::Video, video_ssrc);
        let audio = local_track(RtpCodecKind::Audio, audio_ssrc);
        pc.add_track(video.clone() as Arc<dyn TrackLocal>)
            .await
            .expect("add video");
        pc.add_track(audio.clone() as Arc<dyn TrackLocal>)
            .await
            .expect("add audio");
        tokio::spawn(send_media(
            video.clone(),
            audio.clone(),
            codec,
            video_ssrc,
            audio_ssrc,
            shared.clone(),
        ));
        tokio::spawn(watch_keyframe_requests(video, shared.clone()));

        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Value>();
        let driver_pc = pc.clone();
        let driver_shared = shared.clone();
        let driver = tokio::spawn(async move {
            let pc = driver_pc;
            let shared = driver_shared;
            let mut published = false;
            let send = |v: Value| Message::text(v.to_string());
            // Publish: the first offer is ours.
            if let Some(sdp) = make_offer(&pc).await {
                let _ = ws_tx.send(send(json!({"type":"offer","sdp":sdp}))).await;
            }
            loop {
                tokio::select! {
                    msg = ws_rx.next() => {
                        let Some(Ok(Message::Text(t))) = msg else {
                            if matches!(msg, Some(Ok(_))) { continue; }
                            break;
                        };
                        let v: Value = serde_json::from_str(t.as_str()).unwrap();
                        shared.messages.lock().unwrap().push(v.clone());
                        match v["type"].as_str().unwrap_or("") {
                            "offer" => {
                                // Polite peer: roll back our own colliding offer.
                                if pc.signaling_state_is_have_local_offer().await {
                                    let _ = pc.set_local_description(rollback()).await;
                                }
                                let offer = RTCSessionDescription::offer(v["sdp"].as_str().unwrap().to_string()).unwrap();
                                pc.set_remote_description(offer).await.expect("server offer applies");
                                let answer = pc.create_answer(None).await.unwrap();
                                pc.set_local_description(answer.clone()).await.unwrap();
                                let _ = ws_tx.send(send(json!({"type":"answer","sdp":answer.sdp}))).await;
                                if !published {
                                    if let Some(sdp) = make_offer(&pc).await {
                                        let _ = ws_tx.send(send(json!({"type":"offer","sdp":sdp}))).await;
                                    }
                                }
                            }
                            "answer" => {
                                let answer = RTCSessionDescription::answer(v["sdp"].as_str().unwrap().to_string()).unwrap();
                                pc.set_remote_description(answer).await.expect("server answer applies");
                                published = true;
                            }
                            "candidate" => {
                                let c: RTCIceCandidateInit = serde_json::from_value(v["candidate"].clone()).unwrap();
                                let _ = pc.add_ice_candidate(c).await;
                            }
                            _ => {}
                        }
                    }
                    ev = ev_rx.recv() => match ev {
                        Some(Event::Candidate(c)) => {
                            let _ = ws_tx.send(send(json!({"type":"candidate","candidate":c}))).await;
                        }
                        Some(Event::State(s)) => {
                            shared.connected.store(s == RTCPeerConnectionState::Connected, Ordering::Relaxed);
                        }
                        Some(Event::Track(track)) => {
                            tokio::spawn(count_track(track, shared.clone()));
                        }
                        None => break,
                    },
                    cmd = cmd_rx.recv() => match cmd {
                        Some(v) => { let _ = ws_tx.send(send(v)).await; }
                        None => break,
                    },
                }
            }
            shared.stop_media.store(true, Ordering::Relaxed);
            let _ = ws_tx.close().await;
        });
        Client {
            id,
            shared,
            commands: cmd_tx,
            driver,
            pc,
        }
    }

    pub fn send(&self, v: Value) {
        let _ = self.commands.send(v);
    }

    /// Leaves politely (a `leave` message), then tears the connection down.
    pub async fn leave(self) {
        self.send(json!({"type":"leave"}));
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.crash().await;
    }

    /// Vanishes without a word, like a crashed browser tab.
    pub async fn crash(self) {
        self.shared.stop_media.store(true, Ordering::Relaxed);
        self.driver.abort();
        let _ = self.pc.close().await;
    }

    /// Sends `n` PLIs about `publisher`'s video, `gap` apart, as this subscriber.
    pub async fn send_plis(&self, publisher: &str, n: usize, gap: Duration) {
        let track = self
            .shared
            .remote_tracks
            .lock()
            .unwrap()
            .get(&(publisher.to_string(), "video".to_string()))
            .cloned()
            .expect("receiving that publisher's video");
        let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
        for _ in 0..n {
            let _ = track
                .write_rtcp(vec![Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: ssrc,
                })])
                .await;
            tokio::time::sleep(gap).await;
        }
    }
}

trait SignalingStateExt {
    async fn signaling_state_is_have_local_offer(&self) -> bool;
}

impl SignalingStateExt for Arc<dyn PeerConnection> {
    async fn signaling_state_is_have_local_offer(&self) -> bool {
        self.pending_local_description().await.is_some()
    }
}

fn rollback() -> RTCSessionDescription {
    let mut d = RTCSessionDescription::default();
    d.sdp_type = RTCSdpType::Rollback;
    d
}

async fn make_offer(pc: &Arc<dyn PeerConnection>) -> Option<String> {
    let offer = pc.create_offer(None).await.ok()?;
    pc.set_local_description(offer.clone()).await.ok()?;
    Some(offer.sdp)
}

/// 30 fps video (3 packets a frame, keyframe every 2 s or on request), 50 pps audio.
/// Bounded: stops at the stop flag or after 120 s.
async fn send_media(
    video: Arc<TrackLocalStaticRTP>,
    audio: Arc<TrackLocalStaticRTP>,
    codec: Video,
    video_ssrc: u32,
    audio_ssrc: u32,
    shared: Arc<Shared>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut vseq, mut aseq) = (rand::random::<u16>(), rand::random::<u16>());
    let (mut vts, mut ats) = (rand::random::<u32>(), rand::random::<u32>());
    let mut frame = 0u64;
    for step in 0..12_000u64 {
        tick.tick().await;
        if shared.stop_media.load(Ordering::Relaxed) {
            return;
        }
        if !shared.connected.load(Ordering::Relaxed) {
            continue; // nothing can be sent before DTLS-SRTP is up
        }
        if step % 2 == 0 {
            let pkt = packet(
                audio_ssrc,
                OPUS_PT,
                aseq,
                ats,
                true,
                Bytes::from(vec![0xfc; 60]),
            );
            let _ = audio.write_rtp(pkt).await;
            aseq = aseq.wrapping_add(1);
            ats = ats.wrapping_add(960);
        }
        if step % 3 == 0 {
            let key =
                frame.is_multiple_of(60) || shared.force_keyframe.swap(false, Ordering::Relaxed);
            for i in 0..3u8 {
                let mut payload = vec![0u8; 1000];
                payload[..2].copy_from_slice(&codec.payload_head(i == 0, key));
                let pkt = packet(
                    video_ssrc,
                    codec.payload_type(),
                    vseq,
                    vts,
                    i == 2,
                    Bytes::from(payload),
                );
                let _ = video.write_rtp(pkt).await;
                vseq = vseq.wrapping_add(1);
            }
            vts = vts.wrapping_add(3000);
            frame += 1;
        }
    }
}

fn packet(ssrc: u32, pt: u8, seq: u16, ts: u32, marker: bool, payload: Bytes) -> rtp::Packet {
    rtp::Packet {
        header: rtp::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}

async fn watch_keyframe_requests(video: Arc<TrackLocalStaticRTP>, shared: Arc<Shared>) {
    while let Some(ev) = video.poll().await {
        if let TrackLocalEvent::OnRtcpPacket(pkts) = ev {
            if pkts
                .iter()
                .any(|p| p.as_any().is::<PictureLossIndication>())
            {
                shared.plis_received.fetch_add(1, Ordering::Relaxed);
                shared.force_keyframe.store(true, Ordering::Relaxed);
            }
        }
    }
}

async fn count_track(track: Arc<dyn TrackRemote>, shared: Arc<Shared>) {
    let publisher = track.stream_id().await.to_string();
    let kind = if track.kind().await == RtpCodecKind::Video {
        "video"
    } else {
        "audio"
    };
    let key = (publisher, kind.to_string());
    shared
        .remote_tracks
        .lock()
        .unwrap()
        .insert(key.clone(), track.clone());
    while let Some(ev) = track.poll().await {
        match ev {
            TrackRemoteEvent::OnRtpPacket(p) => {
                let mut map = shared.received.lock().unwrap();
                let s = map.entry(key.clone()).or_default();
                s.packets += 1;
                s.ssrcs.insert(p.header.ssrc);
                s.payload_types.insert(p.header.payload_type);
                if let Some(last) = s.last_seq {
                    if p.header.sequence_number != last.wrapping_add(1) {
                        s.seq_discontinuities += 1;
                    }
                }
                s.last_seq = Some(p.header.sequence_number);
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

#[allow(dead_code)]
fn _assert_signaling_state_type(_: RTCSignalingState) {}
