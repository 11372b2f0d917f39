//! A synthetic participant whose media runs on a shared [`Pool`] thread (sans-I/O rtc)
//! while its signaling runs as one async task: the load tester's participant. It counts
//! what it receives into the same [`Shared`] as [`super::SyntheticParticipant`], so the
//! load tester's accounting is the same for both.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use rtc::interceptor::Slot;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::media::MediaPlan;
use super::participant::{connect_and_join, lock, next_json, Shared, SyntheticError};
use super::peer::{media_engine, KEYFRAME_FORWARDER_SLOT};
use super::pool::{Pool, PoolState, Sending};
use switchyard::engine::feedback::KeyframeRequestForwarder;

pub struct LiteParticipant {
    pub id: String,
    pub shared: Arc<Shared>,
    key: usize,
    pool: Pool,
    signaling: tokio::task::JoinHandle<()>,
    outbox: tokio::sync::mpsc::UnboundedSender<Value>,
}

fn peer_err(e: impl std::fmt::Display) -> SyntheticError {
    SyntheticError::Peer(e.to_string())
}

fn build_pc(now: Instant) -> Result<RTCPeerConnection, SyntheticError> {
    let mut engine = media_engine().map_err(peer_err)?;
    let registry = switchyard::engine::build::interceptor_registry(&mut engine)
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

/// Adds the client's socket address as its one host candidate, its tracks (or
/// receive-only transceivers), and makes the first offer.
fn prepare(state: &mut PoolState, key: usize, plan: MediaPlan) -> Result<String, SyntheticError> {
    let now = Instant::now();
    let c = state.client(key).ok_or_else(|| peer_err("client gone"))?;
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".into(),
            address: c.local.ip().to_string(),
            port: c.local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(peer_err)?;
    let init = RTCIceCandidate::from(&host).to_json().map_err(peer_err)?;
    c.pc.add_local_candidate(init).map_err(peer_err)?;
    let mut add =
        |kind: RtpCodecKind, label: &str, rids: &[&str]| -> Result<Sending, SyntheticError> {
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
            let sender = c.pc.add_track(track).map_err(peer_err)?;
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
            c.pc.add_transceiver_from_kind(kind, Some(init))
                .map_err(peer_err)?;
        }
    }
    c.video = video;
    c.audio = audio;
    let offer = c.pc.create_offer(None).map_err(peer_err)?;
    c.pc.set_local_description(now, offer.clone())
        .map_err(peer_err)?;
    Ok(offer.sdp)
}

fn answer(state: &mut PoolState, key: usize, sdp: String) -> Option<String> {
    let now = Instant::now();
    let c = state.client(key)?;
    let offer = RTCSessionDescription::offer(sdp).ok()?;
    c.pc.set_remote_description(now, offer).ok()?;
    let answer = c.pc.create_answer(None).ok()?;
    c.pc.set_local_description(now, answer.clone()).ok()?;
    Some(answer.sdp)
}

fn apply_answer(state: &mut PoolState, key: usize, sdp: String) {
    if let (Some(c), Ok(answer)) = (state.client(key), RTCSessionDescription::answer(sdp)) {
        let _ = c.pc.set_remote_description(Instant::now(), answer);
    }
}

impl LiteParticipant {
    /// Joins `room` as `name`, with its media on `pool` and its socket on `ip`.
    pub async fn join(
        pool: &Pool,
        ws_url: &str,
        room: &str,
        name: &str,
        plan: MediaPlan,
        ip: IpAddr,
    ) -> Result<Self, SyntheticError> {
        let (shared, id, mut ws_tx, mut ws_rx) = connect_and_join(ws_url, room, name, None).await?;
        let text = |v: Value| Message::text(v.to_string());

        let pc = build_pc(Instant::now())?;
        let s = shared.clone();
        let key = pool
            .run(move |state| state.add(ip, pc, s, plan))
            .await
            .ok_or_else(|| peer_err("the media thread stopped"))?
            .map_err(peer_err)?;
        let offer = pool
            .run(move |state| prepare(state, key, plan))
            .await
            .ok_or_else(|| peer_err("the media thread stopped"))??;
        ws_tx
            .send(text(json!({"type":"offer","sdp":offer})))
            .await
            .map_err(|e| SyntheticError::Signaling(e.to_string()))?;

        let (outbox, mut outbox_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let task_pool = pool.clone();
        let task_shared = shared.clone();
        let signaling = tokio::spawn(async move {
            loop {
                tokio::select! {
                    msg = next_json(&mut ws_rx) => {
                        let Some(v) = msg else { break };
                        let sdp = v["sdp"].as_str().unwrap_or_default().to_string();
                        match v["type"].as_str().unwrap_or("") {
                            // Only the first offer is ours, so a server offer never collides.
                            "offer" => {
                                let reply = task_pool.run(move |st| answer(st, key, sdp)).await.flatten();
                                if let Some(sdp) = reply {
                                    let _ = ws_tx.send(text(json!({"type":"answer","sdp":sdp}))).await;
                                }
                            }
                            "answer" => {
                                task_pool.run(move |st| apply_answer(st, key, sdp)).await;
                            }
                            // A full-ICE server (Janus, older Switchyard) trickles its own.
                            "candidate" => {
                                if let Ok(c) = serde_json::from_value::<RTCIceCandidateInit>(v["candidate"].clone()) {
                                    task_pool.run(move |st| {
                                        if let Some(c2) = st.client(key) {
                                            let _ = c2.pc.add_remote_candidate(c);
                                        }
                                    }).await;
                                }
                            }
                            _ => {}
                        }
                        lock(&task_shared.messages).push(v);
                    }
                    out = outbox_rx.recv() => match out {
                        Some(v) => { let _ = ws_tx.send(text(v)).await; }
                        None => break,
                    },
                }
            }
            task_shared.stop_media.store(true, Ordering::Relaxed);
            let _ = ws_tx.close().await;
        });
        Ok(LiteParticipant {
            id,
            shared,
            key,
            pool: pool.clone(),
            signaling,
            outbox,
        })
    }

    /// Leaves politely, then removes the connection from its media thread.
    pub async fn leave(self) {
        let _ = self.outbox.send(json!({"type":"leave"}));
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.shared.stop_media.store(true, Ordering::Relaxed);
        self.signaling.abort();
        let key = self.key;
        self.pool.run(move |st| st.remove(key)).await;
    }
}
