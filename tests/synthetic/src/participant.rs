//! A headless participant: a webrtc-rs PeerConnection and a signaling WebSocket, acting
//! as the polite peer like the web client does, publishing synthetic media and counting
//! what it receives per publisher. Used by the integration tests and `switchyard-load`.

use std::collections::HashMap;
use std::net::IpAddr;
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
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;

use super::media::{encode, now_micros, MediaPlan};
use super::peer::client_peer;
use super::stats::StreamStats;

/// Media is sent for at most this long, whatever happens to the participant.
const MAX_MEDIA_SECONDS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    #[error("cannot connect to {0}")]
    Connect(String),
    #[error("the server refused the join: {0}")]
    Refused(Value),
    #[error("signaling: {0}")]
    Signaling(String),
    #[error("media connection: {0}")]
    Peer(String),
}

/// State shared between a participant's tasks and whoever observes it.
#[derive(Default)]
pub struct Shared {
    /// Keyed by (publisher participant id, "audio"/"video").
    pub received: Mutex<HashMap<(String, String), StreamStats>>,
    pub remote_tracks: Mutex<HashMap<(String, String), Arc<dyn TrackRemote>>>,
    pub messages: Mutex<Vec<Value>>,
    /// `moved` answers followed on the way to the room's node.
    pub moves: AtomicU64,
    pub plis_received: AtomicU64,
    /// NACK packets (RTCP) that reached the application; the sans-I/O clients count them.
    pub nacks_received: AtomicU64,
    pub connected: AtomicBool,
    pub own_ssrcs: Mutex<Vec<u32>>,
    /// Next synthetic counter of each published kind = packets sent so far.
    pub video_sent: AtomicU64,
    pub audio_sent: AtomicU64,
    /// When `join` was called (µs since the epoch).
    pub join_started_micros: AtomicU64,
    force_keyframe: AtomicBool,
    pub(crate) stop_media: AtomicBool,
    /// A simulated slow downlink for the load tester's participants (bits/s, 0 = none):
    /// datagrams above it are dropped before the connection sees them.
    pub downlink_limit_bps: AtomicU64,
    pub downlink_dropped: AtomicU64,
}

impl Shared {
    pub fn packets_from(&self, publisher: &str, kind: &str) -> u64 {
        self.stats(publisher, kind).map_or(0, |s| s.packets)
    }

    pub fn stats(&self, publisher: &str, kind: &str) -> Option<StreamStats> {
        lock(&self.received)
            .get(&(publisher.to_string(), kind.to_string()))
            .cloned()
    }

    pub fn saw_message(&self, pred: impl Fn(&Value) -> bool) -> bool {
        lock(&self.messages).iter().any(pred)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct SyntheticParticipant {
    pub id: String,
    pub shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Value>,
    driver: tokio::task::JoinHandle<()>,
    pc: Arc<dyn PeerConnection>,
}

pub(crate) enum Event {
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

/// A sending track with no codec pinned: like a browser, the offer then lists every
/// registered codec of the kind, so the server can later send us any of them.
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
            ..Default::default()
        }],
    )))
}

pub(crate) const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A PeerConnection on one UDP port of `bind_ip`, reporting to `events`.
pub(crate) async fn peer_on(
    bind_ip: IpAddr,
    events: mpsc::UnboundedSender<Event>,
) -> Result<Arc<dyn PeerConnection>, SyntheticError> {
    client_peer(bind_ip, Arc::new(Handler(events)))
        .await
        .map_err(|e| SyntheticError::Peer(e.to_string()))
}

pub(crate) type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl SyntheticParticipant {
    /// Joins `room` as `name` through the signaling API, publishes what `media` says, and
    /// returns once `joined` arrived; the media connection comes up in the background.
    pub async fn join(
        ws_url: &str,
        room: &str,
        name: &str,
        media: MediaPlan,
    ) -> Result<Self, SyntheticError> {
        Self::join_from(ws_url, room, name, media, LOOPBACK).await
    }

    /// As [`join`](Self::join), with an access token: the room and the name are the
    /// token's (a server with API keys admits nobody without one).
    pub async fn join_with_token(
        ws_url: &str,
        token: &str,
        media: MediaPlan,
    ) -> Result<Self, SyntheticError> {
        Self::join_inner(ws_url, ("", "", Some(token)), media, LOOPBACK).await
    }

    /// As [`join`](Self::join), with the media socket bound to `bind_ip`.
    pub async fn join_from(
        ws_url: &str,
        room: &str,
        name: &str,
        media: MediaPlan,
        bind_ip: IpAddr,
    ) -> Result<Self, SyntheticError> {
        Self::join_inner(ws_url, (room, name, None), media, bind_ip).await
    }

    async fn join_inner(
        ws_url: &str,
        (room, name, token): (&str, &str, Option<&str>),
        media: MediaPlan,
        bind_ip: IpAddr,
    ) -> Result<Self, SyntheticError> {
        let (shared, id, ws_tx, ws_rx) = connect_and_join(ws_url, room, name, token).await?;

        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let pc = peer_on(bind_ip, ev_tx).await?;
        add_media(&pc, media, &shared).await?;

        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel::<Value>();
        let driver = tokio::spawn(drive(
            pc.clone(),
            shared.clone(),
            ws_tx,
            ws_rx,
            ev_rx,
            cmd_rx,
        ));
        Ok(SyntheticParticipant {
            id,
            shared,
            commands: cmd_tx,
            driver,
            pc,
        })
    }

    /// Sends a raw signaling message.
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
    pub async fn send_plis(
        &self,
        publisher: &str,
        n: usize,
        gap: Duration,
    ) -> Result<(), SyntheticError> {
        let track = lock(&self.shared.remote_tracks)
            .get(&(publisher.to_string(), "video".to_string()))
            .cloned()
            .ok_or_else(|| SyntheticError::Peer(format!("not receiving video from {publisher}")))?;
        let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
        for _ in 0..n {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            let _ = track.write_rtcp(vec![Box::new(pli)]).await;
            tokio::time::sleep(gap).await;
        }
        Ok(())
    }
}

/// Opens the signaling WebSocket and joins: the participant's shared state (the
/// `joined` message recorded), its id and the two halves of the socket.
pub(crate) async fn connect_and_join(
    ws_url: &str,
    room: &str,
    name: &str,
    token: Option<&str>,
) -> Result<
    (
        Arc<Shared>,
        String,
        futures_util::stream::SplitSink<WsStream, Message>,
        futures_util::stream::SplitStream<WsStream>,
    ),
    SyntheticError,
> {
    let shared = Arc::new(Shared::default());
    shared
        .join_started_micros
        .store(now_micros(), Ordering::Relaxed);
    // A node of a cluster may answer `moved`: the room is hosted by the node at `url`.
    let mut url = ws_url.to_string();
    let mut hops = 0;
    let (ws_tx, ws_rx, joined) = loop {
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| SyntheticError::Connect(format!("{url}: {e}")))?;
        let (mut ws_tx, mut ws_rx) = ws.split();
        ws_tx
            .send(Message::text(join_message(room, name, token).to_string()))
            .await
            .map_err(|e| SyntheticError::Signaling(e.to_string()))?;
        let reply = wait_for_joined(&mut ws_rx).await?;
        if reply["type"] == "moved" && hops < 3 {
            hops += 1;
            url = reply["url"].as_str().unwrap_or_default().to_string();
            shared.moves.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if reply["type"] == "moved" {
            return Err(SyntheticError::Signaling(format!(
                "moved more than 3 times: {reply}"
            )));
        }
        break (ws_tx, ws_rx, reply);
    };
    let id = joined["participant_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    lock(&shared.messages).push(joined);
    Ok((shared, id, ws_tx, ws_rx))
}

/// The `join` message; `token` only when there is one (a server older than tokens
/// refuses unknown fields).
fn join_message(room: &str, name: &str, token: Option<&str>) -> Value {
    let mut msg = json!({"type": "join", "room": room, "name": name});
    if let Some(token) = token {
        msg["token"] = token.into();
    }
    msg
}

/// The next JSON message from the server; `None` when the socket ends. Other frames
/// and text that is not JSON are skipped.
pub(crate) async fn next_json(
    ws_rx: &mut futures_util::stream::SplitStream<WsStream>,
) -> Option<Value> {
    loop {
        match ws_rx.next().await? {
            Ok(Message::Text(t)) => {
                if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                    return Some(v);
                }
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

async fn wait_for_joined(
    ws_rx: &mut futures_util::stream::SplitStream<WsStream>,
) -> Result<Value, SyntheticError> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws_rx.next())
            .await
            .map_err(|_| SyntheticError::Signaling("no `joined` within 10 s".into()))?;
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            other => {
                return Err(SyntheticError::Signaling(format!(
                    "socket ended before `joined`: {other:?}"
                )))
            }
        };
        let v: Value = serde_json::from_str(text.as_str())
            .map_err(|e| SyntheticError::Signaling(e.to_string()))?;
        match v["type"].as_str() {
            Some("joined") | Some("moved") => return Ok(v),
            Some("error") => return Err(SyntheticError::Refused(v)),
            _ => {}
        }
    }
}

/// Adds one sending track with a fresh SSRC (remembered in `own_ssrcs`).
async fn add_sending_track(
    pc: &Arc<dyn PeerConnection>,
    kind: RtpCodecKind,
    shared: &Arc<Shared>,
) -> Result<Sending, SyntheticError> {
    let ssrc = rand::random::<u32>();
    lock(&shared.own_ssrcs).push(ssrc);
    let track = local_track(kind, ssrc);
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(|e| SyntheticError::Peer(e.to_string()))?;
    Ok(Sending {
        track,
        ssrc,
        sender,
    })
}

/// A sending track, its SSRC and its sender (which knows the negotiated payload types).
struct Sending {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    sender: Arc<dyn RtpSender>,
}

/// The payload type this connection negotiated for `mime` (H.264: packetization mode 1,
/// the one the synthetic packets use), as a browser would find it.
async fn negotiated_payload_type(sender: &Arc<dyn RtpSender>, mime: &str) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    params
        .rtp_parameters
        .codecs
        .iter()
        .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .max_by_key(|c| c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1"))
        .map(|c| c.payload_type)
}

/// Adds the publishing tracks and starts their senders; a participant that publishes
/// nothing adds receive-only transceivers, so it still makes the first offer.
pub(crate) async fn add_media(
    pc: &Arc<dyn PeerConnection>,
    media: MediaPlan,
    shared: &Arc<Shared>,
) -> Result<(), SyntheticError> {
    let peer_err = |e: webrtc::error::Error| SyntheticError::Peer(e.to_string());
    let video = match media.video {
        Some(_) => {
            let sending = add_sending_track(pc, RtpCodecKind::Video, shared).await?;
            tokio::spawn(watch_keyframe_requests(
                sending.track.clone(),
                shared.clone(),
            ));
            Some(sending)
        }
        None => None,
    };
    let audio = match media.audio {
        true => Some(add_sending_track(pc, RtpCodecKind::Audio, shared).await?),
        false => None,
    };
    if video.is_none() && audio.is_none() {
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            };
            pc.add_transceiver_from_kind(kind, Some(init))
                .await
                .map_err(peer_err)?;
        }
    }
    tokio::spawn(send_media(video, audio, media, shared.clone()));
    Ok(())
}

/// Signaling: the first offer is ours; server offers are answered politely (rolling
/// back a colliding offer of ours, then offering again).
async fn drive(
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    mut ws_tx: futures_util::stream::SplitSink<WsStream, Message>,
    mut ws_rx: futures_util::stream::SplitStream<WsStream>,
    mut events: mpsc::UnboundedReceiver<Event>,
    mut commands: mpsc::UnboundedReceiver<Value>,
) {
    let mut published = false;
    let text = |v: Value| Message::text(v.to_string());
    if let Some(sdp) = make_offer(&pc).await {
        let _ = ws_tx.send(text(json!({"type":"offer","sdp":sdp}))).await;
    }
    loop {
        tokio::select! {
            msg = next_json(&mut ws_rx) => {
                let Some(v) = msg else { break };
                lock(&shared.messages).push(v.clone());
                let sdp = v["sdp"].as_str().unwrap_or_default().to_string();
                match v["type"].as_str().unwrap_or("") {
                    "offer" => {
                        if pc.pending_local_description().await.is_some() {
                            let _ = pc.set_local_description(rollback()).await;
                        }
                        if let Some(answer) = answer_offer(&pc, sdp).await {
                            let _ = ws_tx.send(text(json!({"type":"answer","sdp":answer}))).await;
                        }
                        if !published {
                            if let Some(sdp) = make_offer(&pc).await {
                                let _ = ws_tx.send(text(json!({"type":"offer","sdp":sdp}))).await;
                            }
                        }
                    }
                    "answer" => {
                        if let Ok(answer) = RTCSessionDescription::answer(sdp) {
                            published |= pc.set_remote_description(answer).await.is_ok();
                        }
                    }
                    "candidate" => {
                        if let Ok(c) = serde_json::from_value::<RTCIceCandidateInit>(v["candidate"].clone()) {
                            let _ = pc.add_ice_candidate(c).await;
                        }
                    }
                    _ => {}
                }
            }
            ev = events.recv() => match ev {
                Some(Event::Candidate(c)) => {
                    let _ = ws_tx.send(text(json!({"type":"candidate","candidate":c}))).await;
                }
                Some(Event::State(s)) => {
                    shared.connected.store(s == RTCPeerConnectionState::Connected, Ordering::Relaxed);
                }
                Some(Event::Track(track)) => {
                    tokio::spawn(count_track(track, shared.clone(), None));
                }
                None => break,
            },
            cmd = commands.recv() => match cmd {
                Some(v) => { let _ = ws_tx.send(text(v)).await; }
                None => break,
            },
        }
    }
    shared.stop_media.store(true, Ordering::Relaxed);
    let _ = ws_tx.close().await;
}

async fn answer_offer(pc: &Arc<dyn PeerConnection>, sdp: String) -> Option<String> {
    let offer = RTCSessionDescription::offer(sdp).ok()?;
    pc.set_remote_description(offer).await.ok()?;
    let answer = pc.create_answer(None).await.ok()?;
    pc.set_local_description(answer.clone()).await.ok()?;
    Some(answer.sdp)
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

/// Paces video (30 frames/s, the packets of a frame in a burst, a keyframe every
/// `keyframe_interval_frames` or on request) and audio (50 packets/s). Bounded by the
/// stop flag and [`MAX_MEDIA_SECONDS`].
async fn send_media(
    video: Option<Sending>,
    audio: Option<Sending>,
    plan: MediaPlan,
    shared: Arc<Shared>,
) {
    // Learned once the connection is up: what the server accepted for our codecs.
    let (mut video_pt, mut audio_pt) = (None, None);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut vseq, mut aseq) = (rand::random::<u16>(), rand::random::<u16>());
    let (mut vts, mut ats) = (rand::random::<u32>(), rand::random::<u32>());
    let per_frame = plan.packets_per_frame();
    let mut frame = 0u64;
    for step in 0..MAX_MEDIA_SECONDS * 100 {
        tick.tick().await;
        if shared.stop_media.load(Ordering::Relaxed) {
            return;
        }
        if !shared.connected.load(Ordering::Relaxed) {
            continue; // nothing can be sent before DTLS-SRTP is up
        }
        if let (Some(a), None) = (&audio, audio_pt) {
            audio_pt = negotiated_payload_type(&a.sender, "audio/opus").await;
        }
        if let (Some(v), None, Some(codec)) = (&video, video_pt, plan.video) {
            video_pt = negotiated_payload_type(&v.sender, codec.mime()).await;
        }
        if let (Some(a), Some(pt), true) = (&audio, audio_pt, step % 2 == 0) {
            let counter = shared.audio_sent.fetch_add(1, Ordering::Relaxed);
            let payload = encode([0xfc, 0xff], counter, now_micros(), plan.audio_packet_bytes);
            let _ = a
                .track
                .write_rtp(packet(a.ssrc, pt, aseq, ats, true, payload))
                .await;
            aseq = aseq.wrapping_add(1);
            ats = ats.wrapping_add(960);
        }
        // 30 frames/s from a 100 Hz tick: frames at steps 0, 3, 7, 10, 13, 17, ...
        if let (Some(v), Some(codec), Some(pt)) = (&video, plan.video, video_pt) {
            if (step * 30) / 100 != ((step + 1) * 30) / 100 {
                let key = frame.is_multiple_of(plan.keyframe_interval_frames)
                    || shared.force_keyframe.swap(false, Ordering::Relaxed);
                for i in 0..per_frame {
                    let counter = shared.video_sent.fetch_add(1, Ordering::Relaxed);
                    let head = codec.payload_head(i == 0, key);
                    let payload = encode(head, counter, now_micros(), plan.video_packet_bytes);
                    let marker = i + 1 == per_frame;
                    let _ = v
                        .track
                        .write_rtp(packet(v.ssrc, pt, vseq, vts, marker, payload))
                        .await;
                    vseq = vseq.wrapping_add(1);
                }
                vts = vts.wrapping_add(3000);
                frame += 1;
            }
        }
    }
}

fn packet(ssrc: u32, pt: u8, seq: u16, ts: u32, marker: bool, payload: Vec<u8>) -> rtp::Packet {
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
        payload: Bytes::from(payload),
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

/// Counts a received track's packets under (publisher, kind); the publisher is the
/// track's stream id (Switchyard names streams after participants) unless given.
pub(crate) async fn count_track(
    track: Arc<dyn TrackRemote>,
    shared: Arc<Shared>,
    publisher: Option<String>,
) {
    let publisher = match publisher {
        Some(p) => p,
        None => track.stream_id().await.to_string(),
    };
    let kind = if track.kind().await == RtpCodecKind::Video {
        "video"
    } else {
        "audio"
    };
    let key = (publisher, kind.to_string());
    lock(&shared.remote_tracks).insert(key.clone(), track.clone());
    while let Some(ev) = track.poll().await {
        match ev {
            TrackRemoteEvent::OnRtpPacket(p) => {
                let h = &p.header;
                lock(&shared.received)
                    .entry(key.clone())
                    .or_default()
                    .record(
                        h.ssrc,
                        h.payload_type,
                        h.sequence_number,
                        h.timestamp,
                        &p.payload,
                    );
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}
