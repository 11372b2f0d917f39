//! Access tokens against a real server with API keys: a thousand bad tokens of every
//! kind are refused (none admitted) while a meeting keeps flowing, and grants are
//! enforced (a subscribe-only participant's tracks reach nobody, a publish-only one
//! receives nothing, a microphone-only one publishes no video).

mod common;

use std::time::Duration;

use common::{basic_auth, client, start_server_with, wait_until, RawWs};
use serde_json::json;
use switchyard::auth::{claims_for, Claims, Grants, KeySet, Source};

const KEY: &str = "APItest";
const SECRET: &str = "a test secret of thirty-two bytes or more";
const ROOM: &str = "secure";

fn keys() -> KeySet {
    KeySet::new(&[(KEY.into(), SECRET.into())])
}

fn grants(room: &str) -> Grants {
    Grants {
        room: Some(room.into()),
        ..Grants::default()
    }
}

fn token_for(identity: &str, grants: Grants) -> String {
    let claims = claims_for(KEY, identity, None, Duration::from_secs(600), grants);
    keys().issue(KEY, &claims).unwrap()
}

/// A bad token of kind `i % 9`, and the room the join message names.
fn bad_token(i: usize) -> (&'static str, String, &'static str) {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let identity = format!("intruder{i}");
    let valid = claims_for(KEY, &identity, None, Duration::from_secs(600), grants(ROOM));
    let at = |nbf: i64, exp: i64| Claims {
        nbf: (valid.nbf as i64 + nbf) as u64,
        exp: (valid.nbf as i64 + exp) as u64,
        ..valid.clone()
    };
    match i % 9 {
        0 => {
            let forger = KeySet::new(&[(KEY.into(), format!("{SECRET} but not quite").into())]);
            ("forged", forger.issue(KEY, &valid).unwrap(), ROOM)
        }
        1 => (
            "expired",
            keys().issue(KEY, &at(-7200, -3600)).unwrap(),
            ROOM,
        ),
        2 => (
            "not yet valid",
            keys().issue(KEY, &at(3600, 7200)).unwrap(),
            ROOM,
        ),
        3 => {
            let other = claims_for(
                KEY,
                &identity,
                None,
                Duration::from_secs(600),
                grants("other"),
            );
            ("wrong room", keys().issue(KEY, &other).unwrap(), ROOM)
        }
        4 => {
            let stranger = KeySet::new(&[("APIstranger".into(), SECRET.into())]);
            let c = Claims {
                iss: "APIstranger".into(),
                ..valid.clone()
            };
            (
                "wrong key",
                stranger.issue("APIstranger", &c).unwrap(),
                ROOM,
            )
        }
        5 => {
            let payload = serde_json::to_string(&valid).unwrap();
            let none = format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT","kid":"APItest"}"#),
                b64(&payload)
            );
            ("alg none", none, ROOM)
        }
        6 => ("malformed", format!("not.a.jwt{i}"), ROOM),
        7 => {
            let good = keys().issue(KEY, &valid).unwrap();
            let mut admin = valid.clone();
            admin.grants.room_admin = true;
            admin.sub = "somebody else".into();
            let parts: Vec<&str> = good.split('.').collect();
            let tampered = format!(
                "{}.{}.{}",
                parts[0],
                b64(&serde_json::to_string(&admin).unwrap()),
                parts[2]
            );
            ("tampered", tampered, ROOM)
        }
        _ => ("missing", String::new(), ROOM),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_bad_tokens_are_refused_while_a_meeting_flows() {
    let server = start_server_with(|c| c.api_keys = vec![(KEY.into(), SECRET.into())]).await;
    let ada = client::join_token(&server.ws, &token_for("ada", grants(ROOM))).await;
    let bob = client::join_token(&server.ws, &token_for("bob", grants(ROOM))).await;
    assert!(
        wait_until(20, || ada.shared.packets_from(&bob.id, "video") > 50).await,
        "the meeting never got going"
    );
    let before = ada.shared.packets_from(&bob.id, "video");

    // Twenty sockets, fifty attempts each, spaced below the signaling rate limit.
    let mut refused = std::collections::BTreeMap::<String, usize>::new();
    let mut admitted = 0;
    for socket in 0..20 {
        let mut ws = RawWs::connect(&server.ws).await;
        for attempt in 0..50 {
            let i = socket * 50 + attempt;
            let (kind, token, room) = bad_token(i);
            let msg = if kind == "missing" {
                json!({"type": "join", "room": room, "name": format!("n{i}")})
            } else {
                json!({"type": "join", "room": room, "name": format!("n{i}"), "token": token})
            };
            ws.send_json(msg).await;
            let reply = ws.next_json(5).await;
            match reply["type"].as_str() {
                Some("error") if reply["code"] == "unauthorized" => {
                    *refused.entry(kind.to_string()).or_default() += 1
                }
                Some("joined") => admitted += 1,
                _ => panic!("{kind}: unexpected reply {reply}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!("refused: {refused:?}; admitted: {admitted}");
    assert_eq!(admitted, 0);
    assert_eq!(refused.values().sum::<usize>(), 1000);
    assert_eq!(refused.len(), 9, "every kind was tried: {refused:?}");

    // Nothing else happened: the room still holds the two, and media kept flowing.
    let basic = basic_auth(KEY, SECRET);
    let url = format!("{}/api/rooms/{ROOM}", server.http);
    let (_, room) = switchyard_synthetic::http::call(&url, "GET", None, Some(&basic))
        .await
        .unwrap();
    assert_eq!(
        room["participants"].as_array().map(Vec::len),
        Some(2),
        "{room}"
    );
    assert!(
        wait_until(10, || ada.shared.packets_from(&bob.id, "video")
            > before + 100)
        .await,
        "the meeting stalled: {} -> {}",
        before,
        ada.shared.packets_from(&bob.id, "video")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_limit_publishing_and_subscribing() {
    let server = start_server_with(|c| c.api_keys = vec![(KEY.into(), SECRET.into())]).await;
    let ada = client::join_token(&server.ws, &token_for("ada", grants(ROOM))).await;
    let watcher = client::join_token(
        &server.ws,
        &token_for(
            "watcher",
            Grants {
                can_publish: false,
                ..grants(ROOM)
            },
        ),
    )
    .await;
    let speaker = client::join_token(
        &server.ws,
        &token_for(
            "speaker",
            Grants {
                can_subscribe: false,
                ..grants(ROOM)
            },
        ),
    )
    .await;
    let voice = client::join_token(
        &server.ws,
        &token_for(
            "voice",
            Grants {
                can_publish_sources: vec![Source::Microphone],
                ..grants(ROOM)
            },
        ),
    )
    .await;

    // The subscribe-only watcher receives Ada; nobody receives the watcher, who is told.
    assert!(wait_until(20, || watcher.shared.packets_from(&ada.id, "video") > 50).await);
    let forbidden = |c: &client::Client| {
        c.shared
            .saw_message(|m| m["type"] == "error" && m["code"] == "forbidden")
    };
    assert!(
        wait_until(10, || forbidden(&watcher)).await,
        "the watcher was told"
    );
    // The publish-only speaker reaches Ada and receives nothing.
    assert!(wait_until(20, || ada.shared.packets_from(&speaker.id, "audio") > 50).await);
    // The microphone-only voice is heard, not seen, and told about its camera.
    assert!(wait_until(20, || ada.shared.packets_from(&voice.id, "audio") > 50).await);
    assert!(wait_until(10, || forbidden(&voice)).await, "voice was told");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ada.shared.packets_from(&watcher.id, "video"), 0);
    assert_eq!(ada.shared.packets_from(&watcher.id, "audio"), 0);
    assert_eq!(ada.shared.packets_from(&voice.id, "video"), 0);
    for kind in ["audio", "video"] {
        assert_eq!(
            speaker.shared.packets_from(&ada.id, kind),
            0,
            "speaker got {kind}"
        );
    }
    let published_by = |id: &str| {
        ada.shared
            .saw_message(|m| m["type"] == "track_published" && m["track"]["participant_id"] == id)
    };
    assert!(
        !published_by(&watcher.id),
        "the watcher's tracks were announced"
    );
    assert!(published_by(&speaker.id));
}
