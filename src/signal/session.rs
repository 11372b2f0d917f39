//! One participant's WebSocket: the signaling state machine (lobby -> joined -> left),
//! liveness, and the bridge between the browser, its PeerConnection and its room.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, field, info, info_span, Instrument, Span};

use super::protocol::{ClientMessage, ServerMessage};
use super::AppState;
use crate::error::SignalError;
use crate::id::ParticipantId;
use crate::room::{valid_display_name, valid_room_name};
use crate::rtc::{ParticipantPeer, PeerError, PeerEvent, RoomCommand, RoomHandle, SessionEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

/// The server pings this often; browsers answer pings on their own.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A participant silent this long (no message, no pong) is gone.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server waits for a new participant's first offer before offering itself
/// (see `room::negotiation` for why the browser should offer first).
const FIRST_OFFER_WAIT: Duration = Duration::from_secs(3);

pub async fn run(ws: WebSocket, app: Arc<AppState>) {
    let span = info_span!("session", room = field::Empty, participant = field::Empty);
    let session = Session {
        ws,
        app,
        joined: None,
        room_events: None,
        peer_events: None,
        last_heard: Instant::now(),
        joined_at: Instant::now(),
        span: span.clone(),
    };
    session.run().instrument(span).await
}

struct Joined {
    id: ParticipantId,
    room: RoomHandle,
    peer: ParticipantPeer,
}

enum Flow {
    Continue,
    Close,
}

struct Session {
    ws: WebSocket,
    app: Arc<AppState>,
    joined: Option<Joined>,
    room_events: Option<mpsc::UnboundedReceiver<SessionEvent>>,
    peer_events: Option<mpsc::UnboundedReceiver<PeerEvent>>,
    last_heard: Instant,
    joined_at: Instant,
    span: Span,
}

impl Session {
    async fn run(mut self) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        loop {
            let flow = tokio::select! {
                msg = self.ws.recv() => self.on_ws(msg).await,
                ev = recv_opt(&mut self.room_events) => match ev {
                    Some(ev) => self.on_room_event(ev).await,
                    None => Flow::Close, // the room shut down
                },
                ev = recv_opt(&mut self.peer_events) => match ev {
                    Some(ev) => self.on_peer_event(ev).await,
                    None => Flow::Close,
                },
                _ = heartbeat.tick() => self.on_heartbeat().await,
                _ = first_offer_wait(&self.joined, self.joined_at) => {
                    if let Some(j) = self.joined.as_mut() {
                        j.peer.stop_waiting_for_client();
                    }
                    if let Err(e) = self.offer_if_due().await {
                        self.send_error(e).await;
                    }
                    Flow::Continue
                }
            };
            if let Flow::Close = flow {
                break;
            }
        }
        self.leave().await;
    }

    async fn send(&mut self, msg: ServerMessage) {
        match serde_json::to_string(&msg) {
            Ok(text) => {
                let _ = self.ws.send(Message::Text(text.into())).await;
            }
            Err(e) => debug!("cannot serialize: {e}"),
        }
    }

    async fn send_error(&mut self, e: SignalError) {
        debug!(code = e.code(), "refused: {e}");
        self.send(ServerMessage::Error {
            code: e.code(),
            message: e.to_string(),
        })
        .await;
    }

    async fn on_ws(&mut self, msg: Option<Result<Message, axum::Error>>) -> Flow {
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(_)) | None => return Flow::Close,
        };
        self.last_heard = Instant::now();
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                self.send_error(SignalError::BadJson(
                    "binary frames are not supported".into(),
                ))
                .await;
                return Flow::Continue;
            }
            Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
            Message::Close(_) => return Flow::Close,
        };
        let limit = self.app.config.max_message_bytes;
        if text.len() > limit {
            self.send_error(SignalError::TooLarge {
                size: text.len(),
                limit,
            })
            .await;
            return Flow::Close;
        }
        let msg = match serde_json::from_str::<ClientMessage>(text.as_str()) {
            Ok(m) => m,
            Err(e) => {
                self.send_error(SignalError::BadJson(e.to_string())).await;
                return Flow::Continue;
            }
        };
        match self.on_message(msg).await {
            Ok(flow) => flow,
            Err(e) => {
                self.send_error(e).await;
                Flow::Continue
            }
        }
    }

    async fn on_message(&mut self, msg: ClientMessage) -> Result<Flow, SignalError> {
        if let ClientMessage::Join { room, name } = msg {
            if self.joined.is_some() {
                return Err(SignalError::AlreadyJoined);
            }
            self.join(room, name).await?;
            self.offer_if_due().await?;
            return Ok(Flow::Continue);
        }
        let joined = self.joined.as_mut().ok_or(SignalError::NotJoined)?;
        match msg {
            ClientMessage::Join { .. } => unreachable!("handled above"),
            ClientMessage::Offer { sdp } => {
                if let Some(answer) = joined.peer.client_offer(sdp).await? {
                    self.send(ServerMessage::Answer { sdp: answer }).await;
                }
                self.offer_if_due().await?;
            }
            ClientMessage::Answer { sdp } => {
                joined.peer.client_answer(sdp).await?;
                self.offer_if_due().await?;
            }
            ClientMessage::Candidate { candidate } => joined.peer.add_candidate(candidate).await?,
            ClientMessage::Mute { kind, muted } => {
                joined.room.send(RoomCommand::Mute {
                    id: joined.id,
                    kind,
                    muted,
                });
            }
            ClientMessage::Leave {} => {
                self.leave().await;
                self.send(ServerMessage::Left {}).await;
                return Ok(Flow::Close);
            }
        }
        Ok(Flow::Continue)
    }

    async fn join(&mut self, room: String, name: String) -> Result<(), SignalError> {
        if !valid_room_name(&room) {
            return Err(SignalError::InvalidName(
                "room names are 1-64 characters of A-Z a-z 0-9 _ -",
            ));
        }
        if !valid_display_name(&name) {
            return Err(SignalError::InvalidName(
                "display names are 1-64 characters, not blank, without control characters",
            ));
        }
        let id = self.app.ids.participant();
        // A room whose last participant is leaving may close under us: try a fresh one.
        for _ in 0..3 {
            let handle = self.app.rooms.get_or_create(&room);
            let (events_tx, events_rx) = mpsc::unbounded_channel();
            let (reply_tx, reply_rx) = oneshot::channel();
            let cmd = RoomCommand::Join {
                id,
                name: name.clone(),
                events: events_tx,
                reply: reply_tx,
            };
            if !handle.send(cmd) {
                continue;
            }
            let snapshot = match reply_rx.await {
                Ok(result) => result?,
                Err(_) => continue,
            };
            let (peer, peer_events) =
                match ParticipantPeer::new(id, handle.clone(), self.app.peer.clone()).await {
                    Ok(p) => p,
                    Err(e) => {
                        handle.send(RoomCommand::Leave { id });
                        return Err(e.into());
                    }
                };
            self.span.record("room", room.as_str());
            self.span.record("participant", field::display(id));
            info!(name = %name, "joined");
            self.joined = Some(Joined {
                id,
                room: handle,
                peer,
            });
            self.room_events = Some(events_rx);
            self.peer_events = Some(peer_events);
            self.send(ServerMessage::Joined {
                participant_id: id,
                room,
                ice_servers: self.app.config.ice_servers.clone(),
                participants: snapshot.participants,
                tracks: snapshot.tracks,
            })
            .await;
            return Ok(());
        }
        Err(PeerError::Internal("the room is closing; try again".into()).into())
    }

    /// Makes the next server offer, if the room changed what this participant receives.
    async fn offer_if_due(&mut self) -> Result<(), SignalError> {
        let Some(joined) = self.joined.as_mut() else {
            return Ok(());
        };
        if let Some(sdp) = joined.peer.next_offer().await? {
            self.send(ServerMessage::Offer { sdp }).await;
        }
        Ok(())
    }

    async fn on_room_event(&mut self, ev: SessionEvent) -> Flow {
        // Take everything already waiting, so several subscriptions share one offer.
        let mut next = Some(ev);
        while let Some(ev) = next {
            match ev {
                SessionEvent::Room(e) => self.send(e.into()).await,
                SessionEvent::Subscribe(desc) => {
                    if let Some(j) = self.joined.as_mut() {
                        j.peer.subscribe(desc);
                    }
                }
                SessionEvent::Unsubscribe(track) => {
                    if let Some(j) = self.joined.as_mut() {
                        j.peer.unsubscribe(track);
                    }
                }
            }
            next = self.room_events.as_mut().and_then(|rx| rx.try_recv().ok());
        }
        if let Err(e) = self.offer_if_due().await {
            self.send_error(e).await;
        }
        Flow::Continue
    }

    async fn on_peer_event(&mut self, ev: PeerEvent) -> Flow {
        match ev {
            PeerEvent::LocalCandidate(candidate) => {
                self.send(ServerMessage::Candidate { candidate }).await
            }
            PeerEvent::State(state) => {
                debug!(%state, "peer connection state");
                if matches!(
                    state,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                ) {
                    info!(%state, "media connection lost; removing participant");
                    return Flow::Close;
                }
            }
            PeerEvent::Track(track) => {
                if let Some(j) = self.joined.as_mut() {
                    j.peer.publish(track).await;
                }
            }
        }
        Flow::Continue
    }

    async fn on_heartbeat(&mut self) -> Flow {
        if self.last_heard.elapsed() > LIVENESS_TIMEOUT {
            info!("no sign of life for {LIVENESS_TIMEOUT:?}; removing participant");
            return Flow::Close;
        }
        let _ = self.ws.send(Message::Ping(Default::default())).await;
        Flow::Continue
    }

    async fn leave(&mut self) {
        if let Some(j) = self.joined.take() {
            j.room.send(RoomCommand::Leave { id: j.id });
            j.peer.close().await;
            info!("left");
        }
        self.room_events = None;
        self.peer_events = None;
    }
}

/// Resolves when a joined participant has had its chance to offer first.
async fn first_offer_wait(joined: &Option<Joined>, joined_at: Instant) {
    match joined {
        Some(j) if j.peer.waiting_for_client() => {
            tokio::time::sleep_until((joined_at + FIRST_OFFER_WAIT).into()).await
        }
        _ => std::future::pending().await,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
