//! Webhooks from a real server to receivers on 127.0.0.1: every event of a room's life
//! (started, joined, published, unpublished, left, finished), in order, with signatures
//! checked against the webhook secret (not the API secret); a dead receiver and a
//! stalled one next to a good one: the room is not slowed, the good receiver still gets
//! everything, failures are counted. And delivery over https to a receiver whose
//! certificate a test CA signed, which the server trusts through --webhook-ca-file.

mod common;

use std::time::{Duration, Instant};

use common::hooks::{events_of, receiver};
use common::{basic_auth, client, start_server_with, wait_until};
use serde_json::Value;
use switchyard_synthetic::http;
use tokio::net::TcpListener;

const KEY: &str = "APIhooks";
const SECRET: &str = "a webhook test secret of 32+ bytes!";
/// What signs the webhooks: its own secret, so a receiver cannot mint tokens.
const HOOK_SECRET: &str = "the receivers' own secret, 32+ bytes";

/// The server's counters once a webhook was given up on (or after `secs`).
async fn stats_once_a_webhook_failed(http_base: &str, secs: u64) -> Value {
    let auth = basic_auth(KEY, SECRET);
    let mut stats = Value::Null;
    for _ in 0..secs * 10 {
        stats = http::call(&format!("{http_base}/api/stats"), "GET", None, Some(&auth))
            .await
            .unwrap()
            .1;
        if stats["webhooks_failed"].as_u64() >= Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stats
}

/// A receiver that accepts connections and never answers.
async fn stalled_receiver() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..1000 {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            held.push(s);
        }
    });
    url
}

fn token(identity: &str, room: &str) -> String {
    common::member_token(KEY, SECRET, identity, room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_life_arrives_signed_and_in_order_and_dead_receivers_slow_nothing() {
    let (good, got) = receiver(HOOK_SECRET).await;
    // A port nothing listens on, and one that never answers.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let stalled = stalled_receiver().await;
    let server = start_server_with(|c| {
        c.api_keys = vec![(KEY.into(), SECRET.into())];
        c.webhook_secret = Some(HOOK_SECRET.into());
        c.webhooks = vec![dead.clone(), stalled.clone(), good.clone()];
    })
    .await;

    // Joining is not slowed by the receivers that fail.
    let started = Instant::now();
    let ada = client::join_token(&server.ws, &token("ada", "hooked")).await;
    let bob = client::join_token(&server.ws, &token("bob", "hooked")).await;
    let joined_in = started.elapsed();
    assert!(wait_until(20, || ada.shared.packets_from(&bob.id, "video") > 50).await);
    eprintln!("two joined in {joined_in:?}");
    assert!(
        joined_in < Duration::from_secs(5),
        "joining took {joined_in:?}"
    );

    // Bob leaves; then Ada; the room finishes.
    drop(bob);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(ada);

    // The failing receivers retry on their own: the good one gets everything at once.
    let expected_last = "room_finished";
    let arrived = wait_until(15, || {
        events_of(&got, "hooked").last().map(String::as_str) == Some(expected_last)
    })
    .await;
    let events = events_of(&got, "hooked");
    assert!(arrived, "events so far: {events:?}");
    eprintln!("events: {events:?}");
    assert_eq!(events.first().map(String::as_str), Some("room_started"));
    let position = |e: &str| events.iter().position(|x| x == e).unwrap_or(usize::MAX);
    assert!(position("participant_joined") < position("track_published"));
    assert!(position("track_published") < position("track_unpublished"));
    assert!(position("track_unpublished") < position("participant_left"));
    assert_eq!(
        events.iter().filter(|e| *e == "participant_joined").count(),
        2
    );
    assert_eq!(
        events.iter().filter(|e| *e == "participant_left").count(),
        2
    );
    assert_eq!(events.iter().filter(|e| *e == "track_published").count(), 4);
    assert!(
        got.lock().unwrap().iter().all(|(_, signed)| *signed),
        "every signature checks out"
    );
    // The dead receiver gives up on an event after 3.5 s of retries; the room did not wait.
    let stats = stats_once_a_webhook_failed(&server.http, 10).await;
    eprintln!(
        "webhooks sent {} failed {} dropped {}",
        stats["webhooks_sent"], stats["webhooks_failed"], stats["webhooks_dropped"]
    );
    assert!(stats["webhooks_failed"].as_u64() >= Some(1), "{stats}");
    assert!(stats["webhooks_sent"].as_u64() >= Some(events.len() as u64));
}

/// A test CA and a certificate it signed for 127.0.0.1: (CA PEM, server TLS acceptor).
fn test_pki() -> (String, tokio_rustls::TlsAcceptor) {
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let common::TestPki {
        ca_pem,
        cert: leaf,
        key: leaf_key,
    } = common::test_pki(&["127.0.0.1", "localhost"]);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    (
        ca_pem,
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_go_over_https_to_a_receiver_the_server_trusts_and_not_to_one_it_does_not() {
    let (ca_pem, acceptor) = test_pki();
    let dir = std::env::temp_dir().join(format!("switchyard-hooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let (trusted, got) = common::hooks::receiver_with(HOOK_SECRET, Some(acceptor)).await;
    // The same kind of receiver with a certificate from a CA nobody configured.
    let (_, stranger_acceptor) = test_pki();
    let (untrusted, got_untrusted) =
        common::hooks::receiver_with(HOOK_SECRET, Some(stranger_acceptor)).await;
    assert!(trusted.starts_with("https://127.0.0.1:"), "{trusted}");
    let server = start_server_with(|c| {
        c.api_keys = vec![(KEY.into(), SECRET.into())];
        c.webhook_secret = Some(HOOK_SECRET.into());
        c.webhook_ca_file = Some(ca_file.clone());
        c.webhooks = vec![trusted.clone(), untrusted.clone()];
    })
    .await;
    let ada = client::join_token(&server.ws, &token("ada", "tls")).await;
    let arrived = wait_until(15, || {
        events_of(&got, "tls").contains(&"participant_joined".to_string())
    })
    .await;
    let events = events_of(&got, "tls");
    assert!(arrived, "over https: {events:?}");
    assert!(
        got.lock().unwrap().iter().all(|(_, signed)| *signed),
        "every signature checks out"
    );
    // The untrusted receiver's handshake fails: nothing reaches it, the failure counts.
    let failed =
        stats_once_a_webhook_failed(&server.http, 15).await["webhooks_failed"].as_u64() >= Some(1);
    eprintln!(
        "https: {} events delivered; untrusted receiver got {}",
        events.len(),
        got_untrusted.lock().unwrap().len()
    );
    assert!(
        failed,
        "the delivery to a receiver with an unknown CA failed and was counted"
    );
    assert!(got_untrusted.lock().unwrap().is_empty());
    drop(ada);
    let _ = std::fs::remove_dir_all(&dir);
}
