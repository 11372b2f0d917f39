//! HTTP and WebSocket signaling (axum): the bundled web client, health, the room list,
//! counters (JSON at /api/stats, Prometheus at /metrics), and the `/ws` endpoint
//! (docs/signaling.md).

pub mod admin;
pub mod forward;
pub mod listener;
pub mod prometheus;
pub mod protocol;
pub mod session;

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::auth::KeySet;
use crate::config::Config;
use crate::engine::Engine;

pub struct AppState {
    pub config: Config,
    pub engine: Engine,
    /// The API keys access tokens are checked with; empty in dev mode.
    pub keys: KeySet,
    /// The embedded TURN server, when one runs.
    pub turn: Option<crate::turn::TurnHandle>,
    /// Where rooms are hosted: this node alone, or a Redis-coordinated cluster.
    pub cluster: Arc<crate::cluster::Cluster>,
}

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
/// The web client's ES modules besides app.js, by path.
const MODULES: [(&str, &str); 9] = [
    ("/chat.js", include_str!("../../web/chat.js")),
    ("/devices.js", include_str!("../../web/devices.js")),
    ("/layout.js", include_str!("../../web/layout.js")),
    ("/negotiation.js", include_str!("../../web/negotiation.js")),
    ("/people.js", include_str!("../../web/people.js")),
    ("/quality.js", include_str!("../../web/quality.js")),
    ("/screen.js", include_str!("../../web/screen.js")),
    ("/signaling.js", include_str!("../../web/signaling.js")),
    ("/tiles.js", include_str!("../../web/tiles.js")),
];
const STYLE_CSS: &str = include_str!("../../web/style.css");

pub fn router(app: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/healthz", get(healthz))
        .route("/api/rooms", get(list_rooms))
        .route("/api/stats", get(stats))
        .route("/api/nodes", get(nodes))
        .route("/metrics", get(prometheus::metrics))
        .route("/ws", get(websocket))
        .merge(room_scoped(&app))
        .merge(web_modules())
        .with_state(app)
}

/// The routes about one room, asked of the node that hosts it (signal/forward.rs).
fn room_scoped(app: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/rooms/{name}", get(one_room))
        .merge(admin::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            forward::to_hosting_node,
        ))
}

fn web_modules() -> Router<Arc<AppState>> {
    MODULES.iter().fold(Router::new(), |router, (path, body)| {
        router.route(
            path,
            get(move || async move { asset("text/javascript; charset=utf-8", body) }),
        )
    })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn websocket(ws: WebSocketUpgrade, State(app): State<Arc<AppState>>) -> Response {
    // Frames above our own limit are read so the client can be told why it is refused;
    // tungstenite's cap only guards memory.
    let cap = app.config.max_message_bytes() * 4;
    ws.max_message_size(cap)
        .max_frame_size(cap)
        .on_upgrade(move |socket| session::run(socket, app))
}

async fn list_rooms(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = admin::authorize(&app, &headers, None) {
        return e.into_response();
    }
    Json(forward::rooms_everywhere(&app, &headers, "/api/rooms").await).into_response()
}

async fn one_room(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(e) = admin::authorize(&app, &headers, Some(&name)) {
        return e.into_response();
    }
    match app
        .engine
        .rooms()
        .await
        .into_iter()
        .find(|r| r.name == name)
    {
        Some(room) => Json(room).into_response(),
        None => {
            let body = serde_json::json!({"code": "unknown_room", "message": format!("no room is called {name:?}")});
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
    }
}

/// Open to anyone (load balancers), so it reads two gauges and never asks a shard:
/// a flood of health checks costs the media threads nothing.
async fn healthz(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &app.engine.metrics;
    let (rooms, participants) = (m.rooms_now.load(Relaxed), m.participants_now.load(Relaxed));
    Json(serde_json::json!({"status": "ok", "rooms": rooms, "participants": participants}))
}

/// This node's entry in the cluster registry, as of now.
pub async fn node_info(app: &AppState) -> crate::cluster::NodeInfo {
    use std::sync::atomic::Ordering::Relaxed;
    let rooms = app.engine.rooms().await;
    crate::cluster::NodeInfo {
        id: app.cluster.node_id.clone(),
        ws_url: app.cluster.ws_url.clone(),
        participants: app.engine.metrics.participants_now.load(Relaxed),
        rooms: rooms.into_iter().map(|r| r.name).collect(),
        media: app
            .engine
            .media_addrs
            .iter()
            .map(|a| {
                let ip = app.config.media.advertise_ip().unwrap_or(a.ip());
                std::net::SocketAddr::new(ip, a.port()).to_string()
            })
            .collect(),
        max_participants: app.cluster.max_participants,
        draining: app.cluster.draining(),
    }
}

/// The cluster's live nodes, their load and their rooms (this node alone without Redis).
async fn nodes(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = admin::authorize(&app, &headers, None) {
        return e.into_response();
    }
    let me = node_info(&app).await;
    match app.cluster.nodes(me).await {
        Ok(nodes) => {
            Json(serde_json::json!({ "node": app.cluster.node_id, "nodes": nodes })).into_response()
        }
        Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn stats(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = admin::authorize(&app, &headers, None) {
        return e.into_response();
    }
    let snapshot = app.engine.metrics.snapshot();
    let shards = app.engine.inspect().await;
    let mut rooms = crate::room::RoomRtpCounts::default();
    for shard in &shards {
        rooms.add(&shard.rtp);
    }
    let drops: serde_json::Map<String, serde_json::Value> =
        crate::metrics::rtp_drops(&snapshot, &rooms)
            .into_iter()
            .map(|(cause, n)| (cause.to_string(), n.into()))
            .collect();
    let mut stats = serde_json::to_value(&snapshot).unwrap_or_default();
    stats["rtp_dropped"] = drops.into();
    stats["rtp_rooms"] = serde_json::to_value(rooms).unwrap_or_default();
    stats["shards"] = serde_json::to_value(shards).unwrap_or_default();
    Json(stats).into_response()
}
