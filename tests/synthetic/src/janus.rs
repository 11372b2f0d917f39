//! Synthetic participants for Janus Gateway's videoroom plugin, over its HTTP REST API
//! (session, attach, join as publisher or subscriber, JSEP offer/answer, trickle,
//! long-poll events, keepalives), so the load tester can put the same load on Janus as
//! on Switchyard. One Janus session and PeerConnection per publisher, and one per
//! subscribed feed (Janus's classic one-PeerConnection-per-feed model).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtc::peer_connection::sdp::RTCSessionDescription;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};

use super::http::post_json;
use super::media::{now_micros, MediaPlan};
use super::participant::{add_media, count_track, peer_on, Event, Shared, SyntheticError};

/// Janus drops a session after 60 s without a request; a long poll counts, this is spare.
const KEEPALIVE: Duration = Duration::from_secs(25);
/// A synthetic session polls for at most this long, whatever happens.
const MAX_SESSION: Duration = Duration::from_secs(3600);

fn err(e: impl std::fmt::Display) -> SyntheticError {
    SyntheticError::Signaling(format!("janus: {e}"))
}

/// The SDP of an event's JSEP ("" when absent, which then fails to parse).
fn jsep_sdp(event: &Value) -> String {
    event["jsep"]["sdp"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

static TRANSACTIONS: AtomicU64 = AtomicU64::new(1);

fn transaction() -> String {
    format!("t{}", TRANSACTIONS.fetch_add(1, Ordering::Relaxed))
}

/// One Janus session with one videoroom handle.
#[derive(Clone)]
struct Handle {
    session_url: String,
    handle_url: String,
}

async fn call(url: &str, mut body: Value) -> Result<Value, SyntheticError> {
    body["transaction"] = json!(transaction());
    let (status, v) = post_json(url, &body).await.map_err(err)?;
    if status != 200 || v["janus"] == "error" {
        return Err(err(format!("{url}: HTTP {status}: {v}")));
    }
    Ok(v)
}

impl Handle {
    async fn open(base: &str) -> Result<Handle, SyntheticError> {
        let session = call(base, json!({"janus": "create"})).await?;
        let session_url = format!("{base}/{}", session["data"]["id"]);
        let attached = call(
            &session_url,
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
        )
        .await?;
        let handle_url = format!("{session_url}/{}", attached["data"]["id"]);
        Ok(Handle {
            session_url,
            handle_url,
        })
    }

    async fn message(&self, body: Value, jsep: Option<Value>) -> Result<Value, SyntheticError> {
        let mut msg = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            msg["jsep"] = jsep;
        }
        call(&self.handle_url, msg).await
    }

    /// The next events (long poll, up to 30 s).
    async fn events(&self) -> Result<Vec<Value>, SyntheticError> {
        let url = format!("{}?maxev=10", self.session_url);
        let (_, v) = super::http::get(&url).await.map_err(err)?;
        Ok(match v {
            Value::Array(list) => list,
            other => vec![other],
        })
    }

    /// Waits for a plugin event matching `pred`, at most `secs`.
    async fn wait_event(
        &self,
        secs: u64,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, SyntheticError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < deadline {
            for ev in self.events().await? {
                if ev["janus"] == "event" && pred(&ev) {
                    return Ok(ev);
                }
                if ev["plugindata"]["data"]["error"].is_string() {
                    return Err(err(&ev["plugindata"]["data"]["error"]));
                }
            }
        }
        Err(err("no answer from the videoroom in time"))
    }
}

/// Creates a videoroom with a realistic bitrate cap (the default room caps video at
/// 128 kbit/s, which would throttle the load) and returns its id.
pub async fn create_room(base: &str, room: u64, publishers: usize) -> Result<u64, SyntheticError> {
    let h = Handle::open(base).await?;
    let body = json!({
        "request": "create", "room": room, "publishers": publishers.max(1),
        "bitrate": 4_000_000, "videocodec": "vp8", "audiocodec": "opus", "notify_joining": false,
    });
    let v = h.message(body, None).await?;
    match v["plugindata"]["data"]["videoroom"].as_str() {
        Some("created") => Ok(room),
        _ => Err(err(format!("create room: {v}"))),
    }
}

/// A PeerConnection Janus serves: a publisher, or a subscription to one feed.
pub struct JanusPeer {
    pub shared: Arc<Shared>,
    pc: Arc<dyn PeerConnection>,
    stop: Arc<AtomicBool>,
}

impl JanusPeer {
    pub async fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.shared.stop_media.store(true, Ordering::Relaxed);
        let _ = self.pc.close().await;
    }

    /// Joins `room` as a publisher of `media`; returns the peer and its feed id.
    pub async fn publish(
        base: &str,
        room: u64,
        name: &str,
        media: MediaPlan,
        bind_ip: IpAddr,
        shared: Arc<Shared>,
    ) -> Result<(JanusPeer, u64), SyntheticError> {
        shared
            .join_started_micros
            .store(now_micros(), Ordering::Relaxed);
        let h = Handle::open(base).await?;
        h.message(
            json!({"request": "join", "ptype": "publisher", "room": room, "display": name}),
            None,
        )
        .await?;
        let joined = h
            .wait_event(10, |e| e["plugindata"]["data"]["videoroom"] == "joined")
            .await?;
        let feed = joined["plugindata"]["data"]["id"]
            .as_u64()
            .ok_or_else(|| err("joined without an id"))?;

        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let pc = peer_on(bind_ip, ev_tx).await?;
        add_media(&pc, media, &shared).await?;
        let offer = pc.create_offer(None).await.map_err(err)?;
        pc.set_local_description(offer.clone()).await.map_err(err)?;
        let body =
            json!({"request": "publish", "audio": media.audio, "video": media.video.is_some()});
        h.message(body, Some(json!({"type": "offer", "sdp": offer.sdp})))
            .await?;
        let answered = h.wait_event(10, |e| e["jsep"]["type"] == "answer").await?;
        let answer = RTCSessionDescription::answer(jsep_sdp(&answered)).map_err(err)?;
        pc.set_remote_description(answer).await.map_err(err)?;
        let peer = JanusPeer::drive(h, pc, shared, ev_rx, None);
        // Janus lists a feed for subscribers only once its media connection is up.
        for _ in 0..100 {
            if peer.shared.connected.load(Ordering::Relaxed) {
                return Ok((peer, feed));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(err(
            "the publisher's media connection did not come up within 10 s",
        ))
    }

    /// Subscribes to `feed` in `room`; what arrives is counted under `publisher_key`.
    pub async fn subscribe(
        base: &str,
        room: u64,
        feed: u64,
        publisher_key: String,
        bind_ip: IpAddr,
        shared: Arc<Shared>,
    ) -> Result<JanusPeer, SyntheticError> {
        let h = Handle::open(base).await?;
        let body = json!({"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]});
        h.message(body, None).await?;
        let attached = h.wait_event(10, |e| e["jsep"]["type"] == "offer").await?;
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let pc = peer_on(bind_ip, ev_tx).await?;
        let offer = RTCSessionDescription::offer(jsep_sdp(&attached)).map_err(err)?;
        pc.set_remote_description(offer).await.map_err(err)?;
        let answer = pc.create_answer(None).await.map_err(err)?;
        pc.set_local_description(answer.clone())
            .await
            .map_err(err)?;
        h.message(
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer.sdp})),
        )
        .await?;
        Ok(JanusPeer::drive(h, pc, shared, ev_rx, Some(publisher_key)))
    }

    /// Trickles our candidates, follows the connection state, counts received tracks,
    /// keeps the session alive; until closed.
    fn drive(
        h: Handle,
        pc: Arc<dyn PeerConnection>,
        shared: Arc<Shared>,
        mut events: mpsc::UnboundedReceiver<Event>,
        publisher_key: Option<String>,
    ) -> JanusPeer {
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sh, hh) = (stop.clone(), shared.clone(), h.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                match ev {
                    Event::Candidate(c) => {
                        let candidate = json!({"candidate": c.candidate, "sdpMid": c.sdp_mid, "sdpMLineIndex": c.sdp_mline_index});
                        let _ = call(
                            &hh.handle_url,
                            json!({"janus": "trickle", "candidate": candidate}),
                        )
                        .await;
                    }
                    Event::State(s) => sh
                        .connected
                        .store(s == RTCPeerConnectionState::Connected, Ordering::Relaxed),
                    Event::Track(t) => {
                        tokio::spawn(count_track(t, sh.clone(), publisher_key.clone()));
                    }
                }
            }
        });
        let st = stop.clone();
        tokio::spawn(async move {
            // Long polls keep the session alive; the keepalive covers a stalled poll.
            let mut last_keepalive = tokio::time::Instant::now();
            let give_up = last_keepalive + MAX_SESSION;
            while !st.load(Ordering::Relaxed) && tokio::time::Instant::now() < give_up {
                let _ = h.events().await;
                if last_keepalive.elapsed() > KEEPALIVE {
                    let _ = call(&h.session_url, json!({"janus": "keepalive"})).await;
                    last_keepalive = tokio::time::Instant::now();
                }
            }
        });
        JanusPeer { shared, pc, stop }
    }
}
