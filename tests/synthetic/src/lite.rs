//! A synthetic participant whose media runs on a shared [`Pool`] thread (sans-I/O rtc)
//! while its signaling runs as one async task: the load tester's participant. It counts
//! what it receives into the same [`Shared`] as [`super::SyntheticParticipant`], so the
//! load tester's accounting is the same for both.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::endpoint::build_pc;
use super::link::{Transport, TurnServer};
use super::media::MediaPlan;
use super::participant::{connect_and_join, lock, next_json, Shared, SyntheticError};
use super::pool::{Pool, PoolState};

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

fn prepare(state: &mut PoolState, key: usize) -> Result<String, SyntheticError> {
    let c = state.client(key).ok_or_else(|| peer_err("client gone"))?;
    c.prepare(Instant::now())
}

fn answer(state: &mut PoolState, key: usize, sdp: String) -> Option<String> {
    state.client(key)?.answer(sdp, Instant::now()).ok()
}

fn apply_answer(state: &mut PoolState, key: usize, sdp: String) {
    if let Some(c) = state.client(key) {
        let _ = c.apply_answer(sdp, Instant::now());
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
        Self::join_via(pool, ws_url, room, name, plan, ip, Transport::Udp).await
    }

    /// As `join`, with the media going over `transport`: UDP, ICE-TCP, or through the
    /// TURN server the server hands out in `joined.ice_servers`.
    pub async fn join_via(
        pool: &Pool,
        ws_url: &str,
        room: &str,
        name: &str,
        plan: MediaPlan,
        ip: IpAddr,
        transport: Transport,
    ) -> Result<Self, SyntheticError> {
        let (shared, id, mut ws_tx, mut ws_rx) = connect_and_join(ws_url, room, name, None).await?;
        let text = |v: Value| Message::text(v.to_string());
        let turn = lock(&shared.messages)
            .first()
            .and_then(TurnServer::from_joined);

        let pc = build_pc(Instant::now())?;
        let s = shared.clone();
        let key = pool
            .run(move |state| state.add_via(ip, pc, s, plan, transport, turn))
            .await
            .ok_or_else(|| peer_err("the media thread stopped"))?
            .map_err(peer_err)?;
        let offer = pool
            .run(move |state| prepare(state, key))
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
