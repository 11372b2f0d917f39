//! One participant's WebSocket: the signaling state machine (lobby -> joined -> left),
//! liveness, and the bridge between the browser and the media shard that holds its
//! connection and its room. The session owns no media state: it forwards the client's
//! messages to the shard as commands and the shard's outputs to the client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, field, info, info_span, Instrument, Span};

use super::protocol::{ClientMessage, ServerMessage};
use super::AppState;
use crate::auth::{AuthError, Grants};
use crate::cluster::Placement;
use crate::engine::{Command, EngineError, PeerOutput, ShardHandle, SESSION_QUEUE};
use crate::error::SignalError;
use crate::id::ParticipantId;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimit;
use crate::room::{valid_display_name, valid_room_name};

/// The server pings this often; browsers answer pings on their own.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Client messages per second, sustained and in a burst. A browser's join, offers,
/// answers and a few dozen trickled candidates stay far below; a flood does not.
const MESSAGES_PER_SECOND: u32 = 50;
const MESSAGE_BURST: u32 = 200;
/// A browser sends one screen share, perhaps a few: more is a misbehaving client.
const MAX_NAMED_SOURCES: usize = 16;
/// Close codes in the range RFC 6455 leaves to applications, for the server's own reasons.
const CLOSE_JOIN_TIMEOUT: u16 = 4008;
const CLOSE_SILENT: u16 = 4009;
const CLOSE_REMOVED: u16 = 4010;
const CLOSE_ENGINE_STOPPED: u16 = 4011;

pub async fn run(ws: WebSocket, app: Arc<AppState>) {
    let span = info_span!("session", room = field::Empty, participant = field::Empty);
    let session = Session {
        ws,
        app,
        joined: None,
        outputs: None,
        opened: Instant::now(),
        last_heard: Instant::now(),
        rate: RateLimit::new(MESSAGE_BURST, MESSAGES_PER_SECOND, Instant::now()),
        rate_limited: false,
        stalled: false,
        span: span.clone(),
    };
    session.run().instrument(span).await
}

fn check_names(room: &str, name: &str) -> Result<(), SignalError> {
    if !valid_room_name(room) {
        return Err(SignalError::InvalidName(
            "room names are 1-64 characters of A-Z a-z 0-9 _ -",
        ));
    }
    if !valid_display_name(name) {
        return Err(SignalError::InvalidName(
            "display names are 1-64 characters, not blank, without control characters",
        ));
    }
    Ok(())
}

struct Joined {
    id: ParticipantId,
    shard: ShardHandle,
    /// The username the embedded TURN server knows this participant by, if it runs.
    turn_user: Option<String>,
}

enum Flow {
    Continue,
    /// The client closed, or the socket broke: nothing more to say.
    Close,
    /// The server ends the session: a close frame tells the client why.
    CloseWith(u16, &'static str),
}

struct Session {
    ws: WebSocket,
    app: Arc<AppState>,
    joined: Option<Joined>,
    outputs: Option<mpsc::Receiver<PeerOutput>>,
    /// When the socket opened: `join` is due within the configured join timeout.
    opened: Instant,
    last_heard: Instant,
    rate: RateLimit,
    /// Set while messages are being refused, so the client hears it once.
    rate_limited: bool,
    /// A write did not finish within the write timeout: the client stopped reading.
    stalled: bool,
    span: Span,
}

impl Session {
    async fn run(mut self) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        let join_deadline =
            tokio::time::Instant::from_std(self.opened + self.app.config.join_timeout);
        loop {
            let flow = tokio::select! {
                msg = self.ws.recv() => self.on_ws(msg).await,
                out = recv_opt(&mut self.outputs) => match out {
                    Some(out) => self.on_output(out).await,
                    None => Flow::CloseWith(CLOSE_ENGINE_STOPPED, "the media engine stopped"),
                },
                _ = heartbeat.tick() => self.on_heartbeat().await,
                _ = tokio::time::sleep_until(join_deadline), if self.joined.is_none() => {
                    Metrics::inc(&self.app.engine.metrics.ws_join_timeouts);
                    info!("no join within {:?}; closing", self.app.config.join_timeout);
                    Flow::CloseWith(CLOSE_JOIN_TIMEOUT, "no join in time")
                }
            };
            // A client that stopped reading is cut off, not waited for.
            let flow = if self.stalled {
                Metrics::inc(&self.app.engine.metrics.ws_write_timeouts);
                info!(
                    "a write took over {:?}; closing",
                    self.app.config.ws_write_timeout
                );
                Flow::Close
            } else {
                flow
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => break,
                Flow::CloseWith(code, reason) => {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    self.write(Message::Close(Some(frame))).await;
                    break;
                }
            }
        }
        self.leave().await;
    }

    /// One frame to the client, within the write timeout; a client that does not take
    /// it in time is marked stalled (and the session ends).
    async fn write(&mut self, message: Message) {
        if self.stalled {
            return;
        }
        let limit = self.app.config.ws_write_timeout;
        if tokio::time::timeout(limit, self.ws.send(message))
            .await
            .is_err()
        {
            self.stalled = true;
        }
    }

    async fn send(&mut self, msg: ServerMessage) {
        match serde_json::to_string(&msg) {
            Ok(text) => self.write(Message::Text(text.into())).await,
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
        let limit = self.app.config.max_message_bytes();
        if text.len() > limit {
            self.send_error(SignalError::TooLarge {
                size: text.len(),
                limit,
            })
            .await;
            return Flow::CloseWith(close_code::SIZE, "message too large");
        }
        let now = Instant::now();
        if !self.rate.allow(now) {
            // One notice per stretch of refusals: answering each would let the client
            // use us to amplify its own flood.
            if !self.rate_limited {
                self.rate_limited = true;
                let retry = self.rate.wait();
                self.send_error(SignalError::RateLimited(retry)).await;
            }
            return Flow::Continue;
        }
        self.rate_limited = false;
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
        if let ClientMessage::Join { room, name, token } = msg {
            if self.joined.is_some() {
                return Err(SignalError::AlreadyJoined);
            }
            let (room, name, grants) = self.admit(room, name, token)?;
            // Names first: a cluster must not place (lease) a room that cannot exist.
            check_names(&room, &name)?;
            match self.app.cluster.place(&room).await {
                Ok(Placement::Here) => {}
                Ok(Placement::Elsewhere { node, ws_url }) => {
                    Metrics::inc(&self.app.engine.metrics.cluster_moved);
                    info!(%room, %node, "room hosted elsewhere: moved");
                    self.send(ServerMessage::Moved { node, url: ws_url }).await;
                    return Ok(Flow::CloseWith(close_code::NORMAL, "moved"));
                }
                Err(e) => {
                    Metrics::inc(&self.app.engine.metrics.cluster_refused);
                    return Err(match e {
                        crate::cluster::ClusterError::Full => SignalError::ServerFull,
                        e => SignalError::Cluster(e.to_string()),
                    });
                }
            }
            // The node's own limit holds for the rooms it already hosts too.
            if self.app.cluster.full(self.app.cluster.participants()) {
                Metrics::inc(&self.app.engine.metrics.cluster_refused);
                return Err(SignalError::ServerFull);
            }
            self.join(room, name, grants).await?;
            self.app.cluster.note_load().await;
            return Ok(Flow::Continue);
        }
        let joined = self.joined.as_ref().ok_or(SignalError::NotJoined)?;
        let id = joined.id;
        let cmd = match msg {
            ClientMessage::Join { .. } => unreachable!("handled above"),
            ClientMessage::Offer { sdp, sources } => {
                if sources.len() > MAX_NAMED_SOURCES {
                    return Err(SignalError::BadJson(format!(
                        "an offer names at most {MAX_NAMED_SOURCES} sources"
                    )));
                }
                Command::Offer { id, sdp, sources }
            }
            ClientMessage::Answer { sdp } => Command::Answer { id, sdp },
            ClientMessage::Candidate { candidate } => Command::Candidate { id, candidate },
            ClientMessage::Mute { kind, muted } => Command::Mute { id, kind, muted },
            ClientMessage::View {
                track_id,
                width,
                height,
                visible,
            } => Command::View {
                id,
                track: track_id,
                view: crate::room::View {
                    // No screen is wider than this; larger is a client's mistake.
                    width: width.min(16_384),
                    height: height.min(16_384),
                    visible,
                },
            },
            ClientMessage::Leave {} => {
                self.leave().await;
                self.send(ServerMessage::Left {}).await;
                return Ok(Flow::CloseWith(close_code::NORMAL, "left"));
            }
        };
        if !joined.shard.send(cmd).await {
            return Ok(Flow::CloseWith(
                CLOSE_ENGINE_STOPPED,
                "the media engine stopped",
            ));
        }
        Ok(Flow::Continue)
    }

    /// Who joins where, with what grants: from the token when the server has API keys,
    /// from the message in dev mode. A refused token is logged once, here.
    fn admit(
        &self,
        room: String,
        name: String,
        token: Option<String>,
    ) -> Result<(String, String, Grants), SignalError> {
        if self.app.keys.is_empty() {
            return Ok((room, name, Grants::default()));
        }
        let refuse = |reason: AuthError| {
            info!(%reason, "token refused");
            SignalError::Unauthorized(reason)
        };
        let token = token.ok_or_else(|| refuse(AuthError::Missing))?;
        let claims = self.app.keys.verify(&token).map_err(refuse)?;
        let granted = claims
            .grants
            .room
            .clone()
            .ok_or_else(|| refuse(AuthError::WrongRoom))?;
        if !room.is_empty() && room != granted {
            return Err(refuse(AuthError::WrongRoom));
        }
        let name = claims.display_name().to_string();
        Ok((granted, name, claims.grants))
    }

    async fn join(
        &mut self,
        room: String,
        name: String,
        grants: Grants,
    ) -> Result<(), SignalError> {
        let id = self.app.engine.ids.participant();
        let shard = self.app.engine.shard_for(&room).clone();
        let (events_tx, events_rx) = mpsc::channel(SESSION_QUEUE);
        let (reply_tx, reply_rx) = oneshot::channel();
        let cmd = Command::Join {
            id,
            room: room.clone(),
            name: name.clone(),
            grants,
            events: events_tx,
            reply: reply_tx,
        };
        let stopped =
            || SignalError::Engine(EngineError::Internal("the media engine stopped".into()));
        if !shard.send(cmd).await {
            return Err(stopped());
        }
        let snapshot = reply_rx.await.map_err(|_| stopped())??;
        self.span.record("room", room.as_str());
        self.span.record("participant", field::display(id));
        info!(name = %name, "joined");
        let ice_servers = crate::auth::turn::ice_servers_for(
            &self.app.config.ice_servers,
            self.app.config.turn_secret.as_ref(),
            self.app.config.turn_credential_ttl,
            id,
            crate::auth::unix_now(),
        );
        let mut turn_user = None;
        if let Some(turn) = &self.app.turn {
            for s in ice_servers.iter().filter(|s| s.urls == turn.urls) {
                if let (Some(user), Some(pass)) = (&s.username, &s.credential) {
                    turn.authorize(user.clone(), pass.expose().to_string());
                    turn_user = Some(user.clone());
                }
            }
        }
        self.joined = Some(Joined {
            id,
            shard,
            turn_user,
        });
        self.outputs = Some(events_rx);
        self.send(ServerMessage::Joined {
            participant_id: id,
            room,
            ice_servers,
            participants: snapshot.participants,
            tracks: snapshot.tracks,
        })
        .await;
        Ok(())
    }

    async fn on_output(&mut self, out: PeerOutput) -> Flow {
        match out {
            PeerOutput::Room(e) => self.send(e.into()).await,
            PeerOutput::Offer(sdp) => self.send(ServerMessage::Offer { sdp }).await,
            PeerOutput::Answer(sdp) => self.send(ServerMessage::Answer { sdp }).await,
            PeerOutput::Layers { mid, active } => {
                self.send(ServerMessage::Layers { mid, active }).await
            }
            PeerOutput::Error(e) => self.send_error(e.into()).await,
            PeerOutput::Resync(snapshot) => {
                self.send(ServerMessage::Resync {
                    participants: snapshot.participants,
                    tracks: snapshot.tracks,
                })
                .await
            }
            PeerOutput::Closed(why) => {
                info!("removed by the media engine: {why}");
                self.joined = None;
                return Flow::CloseWith(CLOSE_REMOVED, "the media connection ended");
            }
            PeerOutput::Moved { node, url } => {
                info!(%node, "the room moves to another node (this one drains)");
                self.joined = None;
                self.send(ServerMessage::Moved { node, url }).await;
                return Flow::CloseWith(close_code::NORMAL, "moved");
            }
            PeerOutput::Removed(why) => {
                info!("removed: {why}");
                self.joined = None;
                self.send(ServerMessage::Removed {
                    reason: why.to_string(),
                })
                .await;
                return Flow::CloseWith(CLOSE_REMOVED, "removed from the room");
            }
        }
        Flow::Continue
    }

    async fn on_heartbeat(&mut self) -> Flow {
        let limit = self.app.config.liveness_timeout;
        if self.last_heard.elapsed() > limit {
            info!("no sign of life for {limit:?}; removing participant");
            Metrics::inc(&self.app.engine.metrics.ws_liveness_timeouts);
            return Flow::CloseWith(CLOSE_SILENT, "no sign of life");
        }
        self.write(Message::Ping(Default::default())).await;
        Flow::Continue
    }

    async fn leave(&mut self) {
        if let Some(j) = self.joined.take() {
            j.shard.send(Command::Leave { id: j.id }).await;
            if let (Some(turn), Some(user)) = (&self.app.turn, j.turn_user) {
                turn.forget(user);
            }
            info!("left");
        }
        self.outputs = None;
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
