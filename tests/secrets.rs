//! Scoped secrets (issue 17), against a real server with API keys, a metrics token and a
//! webhook secret, each accepted only where it belongs:
//! - the metrics token reads `/metrics` and nothing else: not `/api/stats`, not the
//!   room list, not the admin API; it is not a key, so nothing it signs is a token;
//! - the webhook secret is no credential anywhere: a token signed with it is refused,
//!   and it does not open the admin API as a password;
//! - the API key pair still does everything an operator does.

mod common;

use std::time::Duration;

use common::{basic_auth, start_server_with, RawWs};
use serde_json::json;
use switchyard::auth::{claims_for, Grants, KeySet};
use switchyard_synthetic::http;

const KEY: &str = "APIscoped";
const SECRET: &str = "the API secret, thirty-two bytes or more";
const METRICS_TOKEN: &str = "prometheus-only-token-0123456789";
const HOOK_SECRET: &str = "the webhook receivers' secret, 32+ bytes";

/// A room-admin token for every room, signed with `secret` under our key id.
fn admin_token_signed_with(secret: &str) -> String {
    let grants = Grants {
        room_admin: true,
        ..Grants::default()
    };
    let claims = claims_for(KEY, "operator", None, Duration::from_secs(600), grants);
    KeySet::new(&[(KEY.into(), secret.into())])
        .issue(KEY, &claims)
        .unwrap()
}

async fn status(url: &str, method: &str, body: Option<&serde_json::Value>, auth: &str) -> u16 {
    http::request_full(url, method, body.map(|b| b.to_string()), Some(auth))
        .await
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_secret_opens_only_its_own_door() {
    let server = start_server_with(|c| {
        c.api_keys = vec![(KEY.into(), SECRET.into())];
        c.metrics_token = Some(METRICS_TOKEN.into());
        c.webhook_secret = Some(HOOK_SECRET.into());
    })
    .await;
    let h = &server.http;
    let metrics_bearer = format!("Bearer {METRICS_TOKEN}");
    let create = json!({"name": "taken-over"});

    // The metrics token: /metrics, and nothing else.
    let (code, _) = http::request_full(&format!("{h}/metrics"), "GET", None, Some(&metrics_bearer))
        .await
        .unwrap();
    assert_eq!(code, 200, "the metrics token reads /metrics");
    let elsewhere = [
        (format!("{h}/api/stats"), "GET", None),
        (format!("{h}/api/rooms"), "GET", None),
        (format!("{h}/api/admin/rooms"), "GET", None),
        (format!("{h}/api/admin/rooms"), "POST", Some(&create)),
    ];
    for (url, method, body) in &elsewhere {
        let code = status(url, method, *body, &metrics_bearer).await;
        eprintln!("metrics token on {method} {url}: {code}");
        assert_eq!(code, 401, "the metrics token is refused on {method} {url}");
    }
    // Nor is it a password for the key, nor a signing key.
    assert_eq!(
        status(
            &format!("{h}/api/admin/rooms"),
            "GET",
            None,
            &basic_auth(KEY, METRICS_TOKEN)
        )
        .await,
        401
    );
    let forged = format!("Bearer {}", admin_token_signed_with(METRICS_TOKEN));
    assert_eq!(
        status(&format!("{h}/api/admin/rooms"), "GET", None, &forged).await,
        401
    );
    let mut ws = RawWs::connect(&server.ws).await;
    ws.send_json(json!({"type": "join", "room": "r", "name": "x",
        "token": admin_token_signed_with(METRICS_TOKEN)}))
        .await;
    ws.expect_error("unauthorized").await;

    // The webhook secret: no door at all.
    let forged = format!("Bearer {}", admin_token_signed_with(HOOK_SECRET));
    for (url, method, body) in &elsewhere {
        assert_eq!(
            status(url, method, *body, &forged).await,
            401,
            "{method} {url}"
        );
    }
    assert_eq!(
        status(&format!("{h}/metrics"), "GET", None, &forged).await,
        401,
        "a token signed with the webhook secret does not read /metrics"
    );
    assert_eq!(
        status(
            &format!("{h}/api/admin/rooms"),
            "GET",
            None,
            &basic_auth(KEY, HOOK_SECRET)
        )
        .await,
        401
    );

    // The API key pair, and a token it signs, still do what an operator does.
    let operator = basic_auth(KEY, SECRET);
    assert_eq!(
        status(&format!("{h}/api/stats"), "GET", None, &operator).await,
        200
    );
    assert_eq!(
        status(&format!("{h}/metrics"), "GET", None, &operator).await,
        200
    );
    let signed = format!("Bearer {}", admin_token_signed_with(SECRET));
    assert_eq!(
        status(&format!("{h}/api/admin/rooms"), "GET", None, &signed).await,
        200
    );
    // Nobody got anything without credentials.
    let (code, _) = http::request_full(&format!("{h}/metrics"), "GET", None, None)
        .await
        .unwrap();
    assert_eq!(code, 401);
}

#[test]
fn configuration_debug_output_prints_no_secret() {
    let c = switchyard::config::Config {
        api_keys: vec![(KEY.into(), SECRET.into())],
        metrics_token: Some(METRICS_TOKEN.into()),
        webhook_secret: Some(HOOK_SECRET.into()),
        ice_servers: vec![switchyard::config::IceServer {
            urls: vec!["turn:127.0.0.1:3478".into()],
            username: Some("user".into()),
            credential: Some("turn-password-123".into()),
        }],
        ..Default::default()
    };
    let printed = format!("{c:?} {c:#?}");
    for secret in [SECRET, METRICS_TOKEN, HOOK_SECRET, "turn-password-123"] {
        assert!(!printed.contains(secret), "Debug printed {secret:?}");
    }
    assert!(printed.contains(KEY), "key names are not secret");
}
