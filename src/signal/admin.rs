//! The room admin API (docs/admin-api.md): HTTP + JSON under `/api/admin`, for an
//! administrator's token (`roomAdmin`; a room-scoped one administers its room only) or
//! the API key pair itself (HTTP Basic, `KEY:SECRET`). In dev mode (no keys) it is open,
//! as everything else is. The operator's read-only routes (`/api/rooms`, `/api/stats`,
//! `/metrics`) take the same credentials once keys are configured.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::AppState;
use crate::auth::{Grants, Source};
use crate::engine::admin::{AdminError, AdminOp};
use crate::id::{MediaKind, ParticipantId};
use crate::room::valid_room_name;

/// Most participants an administrator may allow in one room.
const MAX_ROOM_SIZE: usize = 10_000;
/// Longest an empty room may be kept open.
const MAX_EMPTY_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/admin/rooms", get(list).post(create))
        .route("/api/admin/rooms/{room}", get(one).delete(close))
        .route("/api/admin/rooms/{room}/participants/{id}", delete(remove))
        .route("/api/admin/rooms/{room}/participants/{id}/mute", post(mute))
        .route(
            "/api/admin/rooms/{room}/participants/{id}/grants",
            put(update_grants),
        )
}

/// An API error: its HTTP status, a stable code and a message.
pub struct ApiError(pub StatusCode, pub &'static str, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.1, "message": self.2});
        (self.0, Json(body)).into_response()
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::UnknownRoom => {
                ApiError(StatusCode::NOT_FOUND, "unknown_room", e.to_string())
            }
            AdminError::UnknownParticipant => {
                ApiError(StatusCode::NOT_FOUND, "unknown_participant", e.to_string())
            }
            AdminError::Unavailable => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
        }
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_request", message.into())
}

/// Whether the request may administer `room` (`None`: every room, the server itself).
pub fn authorize(app: &AppState, headers: &HeaderMap, room: Option<&str>) -> Result<(), ApiError> {
    if app.keys.is_empty() {
        return Ok(()); // dev mode
    }
    let unauthorized = |why: &str| {
        info!(reason = why, "admin request refused");
        ApiError(StatusCode::UNAUTHORIZED, "unauthorized", why.to_string())
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unauthorized("an Authorization header is required (Bearer TOKEN or Basic KEY:SECRET)")
        })?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        let claims = app
            .keys
            .verify(token.trim())
            .map_err(|e| unauthorized(&e.to_string()))?;
        let allowed = match room {
            Some(room) => claims.grants.administers(room),
            None => claims.grants.room_admin && claims.grants.room.is_none(),
        };
        if !allowed {
            info!(identity = %claims.sub, "admin request refused: not an administrator here");
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the token does not grant administering this".into(),
            ));
        }
        return Ok(());
    }
    if let Some(encoded) = value.strip_prefix("Basic ") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| unauthorized("Basic credentials are not base64 of KEY:SECRET"))?;
        let (key, secret) = decoded
            .split_once(':')
            .ok_or_else(|| unauthorized("Basic credentials are not KEY:SECRET"))?;
        if app.keys.check_secret(key, secret) {
            return Ok(());
        }
        return Err(unauthorized("unknown API key or wrong secret"));
    }
    Err(unauthorized(
        "Authorization must be Bearer TOKEN or Basic KEY:SECRET",
    ))
}

fn parse_participant(id: &str) -> Result<ParticipantId, ApiError> {
    id.parse()
        .map_err(|_| bad_request(format!("{id:?} is not a participant id (p1, p2, ...)")))
}

fn room_name(room: &str) -> Result<(), ApiError> {
    if valid_room_name(room) {
        Ok(())
    } else {
        Err(bad_request(
            "room names are 1-64 characters of A-Z a-z 0-9 _ -",
        ))
    }
}

fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(v)| v).map_err(|e| {
        bad_request(format!(
            "the body is not the expected JSON: {}",
            e.body_text()
        ))
    })
}

async fn list(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&app, &headers, None)?;
    let rooms = super::forward::rooms_everywhere(&app, &headers, "/api/admin/rooms").await;
    Ok(Json(rooms).into_response())
}

async fn one(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers, Some(&room))?;
    let found = app
        .engine
        .rooms()
        .await
        .into_iter()
        .find(|r| r.name == room);
    found
        .map(|r| Json(r).into_response())
        .ok_or_else(|| AdminError::UnknownRoom.into())
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    name: String,
    max_participants: Option<usize>,
    /// Seconds the room stays open with nobody in it.
    empty_timeout_secs: Option<u64>,
}

async fn create(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    json: Result<Json<CreateRoom>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(json)?;
    room_name(&req.name)?;
    authorize(&app, &headers, Some(&req.name))?;
    // In a cluster the room is placed (and leased) like one a participant joins: here,
    // or on the node it is on or that is least loaded, which is asked to create it.
    match app.cluster.place(&req.name).await {
        Ok(crate::cluster::Placement::Here) => {}
        Ok(crate::cluster::Placement::Elsewhere { node, .. }) => {
            if super::forward::forwarded(&headers) {
                return Err(ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cluster_unavailable",
                    "the room is being placed on another node; try again".into(),
                ));
            }
            let request = axum::http::Request::post("/api/admin/rooms")
                .header(
                    header::AUTHORIZATION,
                    headers
                        .get(header::AUTHORIZATION)
                        .cloned()
                        .unwrap_or(header::HeaderValue::from_static("")),
                )
                .body(axum::body::Body::from(
                    serde_json::to_vec(&req).unwrap_or_default(),
                ))
                .map_err(|e| bad_request(e.to_string()))?;
            return Ok(super::forward::forward(&app, &node, request).await);
        }
        Err(e) => {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                e.to_string(),
            ))
        }
    }
    if req
        .max_participants
        .is_some_and(|m| m == 0 || m > MAX_ROOM_SIZE)
    {
        return Err(bad_request(format!(
            "max_participants is 1-{MAX_ROOM_SIZE}"
        )));
    }
    let empty_timeout = req.empty_timeout_secs.map(Duration::from_secs);
    if empty_timeout.is_some_and(|t| t > MAX_EMPTY_TIMEOUT) {
        return Err(bad_request("empty_timeout_secs is at most a week (604800)"));
    }
    let op = AdminOp::Create {
        max_participants: req.max_participants,
        empty_timeout,
    };
    let room = app.engine.admin(&req.name, op).await?;
    info!(room = %req.name, "room created by an administrator");
    Ok((StatusCode::CREATED, Json(room)).into_response())
}

async fn close(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers, Some(&room))?;
    app.engine.admin(&room, AdminOp::Close).await?;
    info!(room = %room, "room closed by an administrator");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((room, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers, Some(&room))?;
    let participant = parse_participant(&id)?;
    app.engine
        .admin(&room, AdminOp::Remove { participant })
        .await?;
    info!(room = %room, %participant, "participant removed by an administrator");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mute {
    kind: MediaKind,
    muted: bool,
}

async fn mute(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((room, id)): Path<(String, String)>,
    json: Result<Json<Mute>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers, Some(&room))?;
    let participant = parse_participant(&id)?;
    let req = body(json)?;
    let op = AdminOp::Mute {
        participant,
        kind: req.kind,
        muted: req.muted,
    };
    let summary = app.engine.admin(&room, op).await?;
    Ok(Json(summary).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GrantsUpdate {
    can_publish: bool,
    #[serde(default)]
    can_publish_sources: Vec<Source>,
    can_subscribe: bool,
}

async fn update_grants(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((room, id)): Path<(String, String)>,
    json: Result<Json<GrantsUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers, Some(&room))?;
    let participant = parse_participant(&id)?;
    let req = body(json)?;
    let grants = Grants {
        room: Some(room.clone()),
        can_publish: req.can_publish,
        can_publish_sources: req.can_publish_sources,
        can_subscribe: req.can_subscribe,
        room_admin: false,
    };
    let op = AdminOp::UpdateGrants {
        participant,
        grants,
    };
    let summary = app.engine.admin(&room, op).await?;
    Ok(Json(summary).into_response())
}
