//! The admin API and the room lists, cluster-wide (issue 19): a request about a room
//! hosted on another node is run there (cluster/forward.rs carries it over Redis), and
//! a room list gathers every live node's rooms. Without a cluster, nothing changes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{admin, AppState};
use crate::cluster::forward::{ForwardedRequest, ForwardedResponse};
use crate::cluster::ClusterError;
use crate::metrics::Metrics;

/// Marks a request another node forwarded here: it is answered here, never sent on.
pub const FORWARDED: &str = "x-switchyard-forwarded";
/// Largest request body forwarded (admin bodies are a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;
/// Largest answer carried back (a room list of a busy node).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

pub fn forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

/// The room a request's path names: `/api/rooms/{room}` and `/api/admin/rooms/{room}/…`.
fn room_in_path(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/api/admin/rooms/")
        .or_else(|| path.strip_prefix("/api/rooms/"))?;
    rest.split('/').next().filter(|r| !r.is_empty())
}

/// Middleware on the room-scoped routes: a room hosted on another live node is asked
/// there (after the credentials were checked here); any other request goes on here.
pub async fn to_hosting_node(
    State(app): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if !app.cluster.clustered() || forwarded(req.headers()) {
        return next.run(req).await;
    }
    let Some(room) = room_in_path(req.uri().path()).map(str::to_string) else {
        return next.run(req).await;
    };
    if let Err(e) = admin::authorize(&app, req.headers(), Some(&room)) {
        return e.into_response();
    }
    match app.cluster.host_of(&room).await {
        Ok(Some(node)) if node.id != app.cluster.node_id => forward(&app, &node.id, req).await,
        Ok(_) => next.run(req).await,
        Err(e) => unavailable(&app, e),
    }
}

/// Runs `req` on `node` and answers what it answered.
pub async fn forward(app: &AppState, node: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"code": "too_large", "message": format!("bodies are at most {MAX_BODY} bytes")})),
        )
            .into_response();
    };
    let request = ForwardedRequest {
        reply_to: String::new(),
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        authorization: parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    match app.cluster.forward(node, request).await {
        Ok(answer) => {
            Metrics::inc(&app.engine.metrics.cluster_forwarded);
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            if answer.body.is_empty() {
                status.into_response()
            } else {
                (
                    status,
                    [(header::CONTENT_TYPE, "application/json")],
                    answer.body,
                )
                    .into_response()
            }
        }
        Err(e) => unavailable(app, e),
    }
}

fn unavailable(app: &AppState, e: ClusterError) -> Response {
    Metrics::inc(&app.engine.metrics.cluster_forward_failed);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"code": "cluster_unavailable", "message": e.to_string()})),
    )
        .into_response()
}

/// Every live node's rooms, each with `"node"` naming its host: this node's from the
/// engine, the others' asked over the cluster (a node that does not answer in time is
/// left out and counted). Without a cluster, or asked by another node, this node's only.
pub async fn rooms_everywhere(app: &AppState, headers: &HeaderMap, uri: &str) -> Vec<Value> {
    let here = |rooms: Vec<crate::engine::RoomSummary>| {
        rooms
            .into_iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["node"] = app.cluster.node_id.clone().into();
                v
            })
            .collect::<Vec<Value>>()
    };
    let mut out = here(app.engine.rooms().await);
    if !app.cluster.clustered() || forwarded(headers) {
        return out;
    }
    let me = super::node_info(app).await;
    let Ok(nodes) = app.cluster.nodes(me).await else {
        Metrics::inc(&app.engine.metrics.cluster_forward_failed);
        return out;
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let asks = nodes
        .iter()
        .filter(|n| n.id != app.cluster.node_id)
        .map(|n| {
            let request = ForwardedRequest {
                reply_to: String::new(),
                method: "GET".into(),
                uri: uri.to_string(),
                authorization: authorization.clone(),
                body: String::new(),
            };
            async move { (n.id.clone(), app.cluster.forward(&n.id, request).await) }
        });
    for (node, answer) in futures_util::future::join_all(asks).await {
        let rooms = answer
            .ok()
            .filter(|a| a.status == 200)
            .and_then(|a| serde_json::from_str::<Vec<Value>>(&a.body).ok());
        match rooms {
            Some(rooms) => {
                Metrics::inc(&app.engine.metrics.cluster_forwarded);
                out.extend(rooms.into_iter().map(|mut r| {
                    r["node"] = node.clone().into();
                    r
                }));
            }
            None => {
                Metrics::inc(&app.engine.metrics.cluster_forward_failed);
                tracing::warn!(%node, "a node did not answer for its rooms; the list leaves them out");
            }
        }
    }
    out
}

/// Answers the requests other nodes forward here, through this node's own router.
pub fn serve_forwarded(app: &Arc<AppState>, router: Router) {
    let cluster = app.cluster.clone();
    tokio::spawn(cluster.serve_forwarded(move |req: ForwardedRequest| {
        let router = router.clone();
        async move { run_here(router, req).await }
    }));
}

async fn run_here(router: Router, req: ForwardedRequest) -> ForwardedResponse {
    use tower::ServiceExt;
    let mut builder = axum::http::Request::builder()
        .method(req.method.as_str())
        .uri(req.uri.as_str())
        .header(FORWARDED, "1")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(auth) = &req.authorization {
        builder = builder.header(header::AUTHORIZATION, auth);
    }
    let Ok(request) = builder.body(Body::from(req.body)) else {
        return ForwardedResponse {
            status: 400,
            body: r#"{"code":"bad_request","message":"a forwarded request that is not HTTP"}"#
                .into(),
        };
    };
    let Ok(response) = router.oneshot(request).await;
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), MAX_ANSWER)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    ForwardedResponse { status, body }
}

#[cfg(test)]
mod tests {
    use super::room_in_path;

    #[test]
    fn the_room_is_read_from_room_scoped_paths_only() {
        assert_eq!(room_in_path("/api/rooms/standup"), Some("standup"));
        assert_eq!(room_in_path("/api/admin/rooms/standup"), Some("standup"));
        assert_eq!(
            room_in_path("/api/admin/rooms/standup/participants/p3/mute"),
            Some("standup")
        );
        assert_eq!(room_in_path("/api/admin/rooms"), None);
        assert_eq!(room_in_path("/api/admin/rooms/"), None);
        assert_eq!(room_in_path("/api/rooms"), None);
        assert_eq!(room_in_path("/api/stats"), None);
    }
}
