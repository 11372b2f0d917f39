//! The room admin API against a live room, on a server with API keys: who may call it
//! (401 without credentials, 403 for a participant's token or another room's admin),
//! and every call's effect on real participants: create with options, room full, mute
//! and unmute, grants changed, a participant removed, the room closed.

mod common;

use std::time::Duration;

use common::hooks::{events_of, receiver};
use common::{basic_auth, client, start_server_with, wait_until};
use serde_json::{json, Value};
use switchyard::auth::{claims_for, Grants, KeySet};
use switchyard_synthetic::http;

const KEY: &str = "APIadmin";
const SECRET: &str = "an admin test secret, thirty-two+ bytes";
const HOOK_SECRET: &str = "the admin test's webhook secret, 32+ bytes";

fn token(identity: &str, grants: Grants) -> String {
    let claims = claims_for(KEY, identity, None, Duration::from_secs(600), grants);
    KeySet::new(&[(KEY.into(), SECRET.into())])
        .issue(KEY, &claims)
        .unwrap()
}

fn member(room: &str) -> Grants {
    Grants {
        room: Some(room.into()),
        ..Grants::default()
    }
}

fn basic() -> String {
    basic_auth(KEY, SECRET)
}

async fn call(url: &str, method: &str, body: Option<Value>, auth: Option<&str>) -> (u16, Value) {
    http::call(url, method, body.as_ref(), auth).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_call_works_on_a_live_room_and_only_for_administrators() {
    let (hook_url, hooks) = receiver(HOOK_SECRET).await;
    let server = start_server_with(|c| {
        c.api_keys = vec![(KEY.into(), SECRET.into())];
        c.webhook_secret = Some(HOOK_SECRET.into());
        c.webhooks = vec![hook_url];
    })
    .await;
    let api = format!("{}/api/admin/rooms", server.http);
    let board_admin = format!(
        "Bearer {}",
        token(
            "chair",
            Grants {
                room_admin: true,
                ..member("board")
            }
        )
    );
    let other_admin = format!(
        "Bearer {}",
        token(
            "elsewhere",
            Grants {
                room_admin: true,
                ..member("other")
            }
        )
    );
    let participant = format!("Bearer {}", token("ada", member("board")));

    // Who may call.
    assert_eq!(call(&api, "GET", None, None).await.0, 401);
    assert_eq!(
        call(&api, "GET", None, Some("Basic bm9wZTpub3Bl")).await.0,
        401
    );
    assert_eq!(
        call(&api, "GET", None, Some("Bearer not.a.token")).await.0,
        401
    );
    assert_eq!(call(&api, "GET", None, Some(&participant)).await.0, 403);
    assert_eq!(
        call(&api, "GET", None, Some(&board_admin)).await.0,
        403,
        "room-scoped"
    );
    let create = json!({"name": "board", "max_participants": 2, "empty_timeout_secs": 60});
    let (status, body) = call(&api, "POST", Some(create.clone()), Some(&other_admin)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    for path in ["/api/rooms", "/api/stats", "/metrics"] {
        let url = format!("{}{path}", server.http);
        assert_eq!(
            call_status(&url, None).await,
            401,
            "{path} without credentials"
        );
        assert_eq!(
            call_status(&url, Some(&basic())).await,
            200,
            "{path} with the key"
        );
    }

    // Create with options: it stays open while empty, and holds two.
    let (status, body) = call(&api, "POST", Some(create), Some(&board_admin)).await;
    assert_eq!(status, 201, "{body}");
    let (status, rooms) = call(&api, "GET", None, Some(&basic())).await;
    assert_eq!(status, 200);
    assert!(
        rooms
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "board"),
        "{rooms}"
    );
    let ada = client::join_token(&server.ws, &token("ada", member("board"))).await;
    let bob = client::join_token(&server.ws, &token("bob", member("board"))).await;
    let refused = switchyard_synthetic::SyntheticParticipant::join_with_token(
        &server.ws,
        &token("cy", member("board")),
        switchyard_synthetic::MediaPlan::default(),
    )
    .await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("room_full")),
        "{:?}",
        refused.err()
    );
    assert!(wait_until(20, || ada.shared.packets_from(&bob.id, "audio") > 50).await);

    // Mute Bob's microphone: Ada stops getting it and is told; unmute brings it back.
    let bob_url = format!("{api}/board/participants/{}", bob.id);
    let (status, _) = call(
        &format!("{bob_url}/mute"),
        "POST",
        Some(json!({"kind": "audio", "muted": true})),
        Some(&board_admin),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        wait_until(5, || ada
            .shared
            .saw_message(|m| m["type"] == "mute" && m["muted"] == true))
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let muted_at = ada.shared.packets_from(&bob.id, "audio");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        ada.shared.packets_from(&bob.id, "audio") <= muted_at + 2,
        "Bob's audio kept flowing"
    );
    call(
        &format!("{bob_url}/mute"),
        "POST",
        Some(json!({"kind": "audio", "muted": false})),
        Some(&board_admin),
    )
    .await;
    assert!(
        wait_until(5, || ada.shared.packets_from(&bob.id, "audio")
            > muted_at + 20)
        .await
    );

    // Take Bob's subscribe grant: he stops receiving Ada.
    let (status, body) = call(
        &format!("{bob_url}/grants"),
        "PUT",
        Some(json!({"canPublish": true, "canSubscribe": false})),
        Some(&board_admin),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = bob.shared.packets_from(&ada.id, "video");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(bob.shared.packets_from(&ada.id, "video") <= seen + 2);

    // Bad requests: an unknown participant, a malformed body, an unknown room.
    assert_eq!(
        call(
            &format!("{api}/board/participants/p999"),
            "DELETE",
            None,
            Some(&board_admin)
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            &format!("{bob_url}/mute"),
            "POST",
            Some(json!({"kind": "smell"})),
            Some(&board_admin)
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(&format!("{api}/nowhere"), "DELETE", None, Some(&basic()))
            .await
            .0,
        404
    );

    // Remove Bob: he is told, and gone.
    assert_eq!(
        call(&bob_url, "DELETE", None, Some(&board_admin)).await.0,
        204
    );
    assert!(wait_until(5, || bob.shared.saw_message(|m| m["type"] == "removed")).await);
    let (_, room) = call(&format!("{api}/board"), "GET", None, Some(&board_admin)).await;
    assert_eq!(
        room["participants"].as_array().map(Vec::len),
        Some(1),
        "{room}"
    );

    // Close the room: Ada is told; the room is gone.
    assert_eq!(
        call(&format!("{api}/board"), "DELETE", None, Some(&board_admin))
            .await
            .0,
        204
    );
    assert!(wait_until(5, || ada.shared.saw_message(|m| m["type"] == "removed")).await);
    assert_eq!(
        call(&format!("{api}/board"), "GET", None, Some(&board_admin))
            .await
            .0,
        404
    );

    // The webhooks told the room's story, signed, in order: created by the API, two
    // joined, Bob removed, the room closed.
    let story = || events_of(&hooks, "board");
    assert!(
        wait_until(10, || story().last().map(String::as_str)
            == Some("room_finished"))
        .await,
        "{:?}",
        story()
    );
    let story: Vec<String> = story()
        .into_iter()
        .filter(|e| !e.starts_with("track_"))
        .collect();
    assert_eq!(
        story,
        [
            "room_started",
            "participant_joined",
            "participant_joined",
            "participant_left",
            "participant_left",
            "room_finished"
        ]
    );
    assert!(hooks.lock().unwrap().iter().all(|(_, signed)| *signed));
}

async fn call_status(url: &str, auth: Option<&str>) -> u16 {
    // /metrics answers in text: only the status matters here.
    let text = http::call(url, "GET", None, auth).await;
    match text {
        Ok((status, _)) => status,
        Err(e) if e.contains("bad JSON") => 200,
        Err(e) => panic!("{e}"),
    }
}
