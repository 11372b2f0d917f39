//! Every kind of bad input gets a clear error for its sender, while a healthy room on the
//! same server keeps forwarding media.

mod common;

use std::time::Duration;

use common::client;
use common::{http_get_json, start_server, wait_until, RawWs};
use serde_json::json;
use switchyard_synthetic::http;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_healthy_room_carries_on() {
    let server = start_server().await;
    let a = client::join(&server.ws, "healthy", "Ada").await;
    let b = client::join(&server.ws, "healthy", "Bob").await;
    assert!(
        wait_until(20, || a.shared.packets_from(&b.id, "video") > 30).await,
        "room is up"
    );
    let before = a.shared.packets_from(&b.id, "video");

    // Before joining.
    let mut ws = RawWs::connect(&server.ws).await;
    ws.send_text("this is not json").await;
    ws.expect_error("bad_json").await;
    ws.send_text(r#"{"type":"dance"}"#).await;
    ws.expect_error("bad_json").await;
    ws.send_text(r#"{"no_type":1}"#).await;
    ws.expect_error("bad_json").await;
    ws.send_json(json!({"type":"offer","sdp":"v=0"})).await;
    ws.expect_error("not_joined").await;
    ws.send_json(json!({"type":"answer","sdp":"v=0"})).await;
    ws.expect_error("not_joined").await;
    ws.send_json(json!({"type":"join","room":"../../etc","name":"Eve"}))
        .await;
    ws.expect_error("invalid_name").await;
    ws.send_json(json!({"type":"join","room":"healthy","name":""}))
        .await;
    ws.expect_error("invalid_name").await;
    ws.send_json(json!({"type":"join","room":"healthy","name":"x".repeat(65)}))
        .await;
    ws.expect_error("invalid_name").await;
    ws.send_json(json!({"type":"join","room":"healthy","name":"Ada"}))
        .await;
    ws.expect_error("name_taken").await;

    // After joining (another room, so the healthy one is not disturbed by us).
    ws.send_json(json!({"type":"join","room":"mischief","name":"Eve"}))
        .await;
    ws.expect_type("joined", 10).await;
    ws.send_json(json!({"type":"join","room":"mischief","name":"Eve"}))
        .await;
    ws.expect_error("already_joined").await;
    ws.send_json(json!({"type":"answer","sdp":"v=0\r\n"})).await;
    ws.expect_error("no_offer_pending").await;
    ws.send_json(json!({"type":"offer","sdp":"garbage"})).await;
    ws.expect_error("bad_sdp").await;
    ws.send_json(json!({"type":"offer","sdp":"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"})).await;
    ws.expect_error("bad_sdp").await;
    for sdp in nasty_sdps() {
        ws.send_json(json!({"type":"offer","sdp":sdp})).await;
        ws.expect_error("bad_sdp").await;
    }
    ws.send_json(json!({"type":"mute","kind":"smell","muted":true}))
        .await;
    ws.expect_error("bad_json").await;
    // An offer naming an unknown source, or far too many sources.
    ws.send_json(json!({"type":"offer","sdp":"v=0\r\n","sources":{"0":"hologram"}}))
        .await;
    ws.expect_error("bad_json").await;
    let many: serde_json::Map<String, serde_json::Value> =
        (0..100).map(|i| (i.to_string(), json!("screen"))).collect();
    ws.send_json(json!({"type":"offer","sdp":"v=0\r\n","sources":many}))
        .await;
    ws.expect_error("bad_json").await;
    ws.send_json(json!({"type":"candidate","candidate":{"candidate":"candidate:nonsense","sdpMid":"0","sdpMLineIndex":0}})).await;
    // Before any remote description candidates are queued; this one is refused when
    // applied or accepted as queued, but never crashes anything.
    ws.send_text(
        vec![b'x'; 300 * 1024]
            .iter()
            .map(|&c| c as char)
            .collect::<String>(),
    )
    .await;
    ws.expect_error("too_large").await;
    assert!(
        ws.closed_within(5).await,
        "an oversized frame closes the socket"
    );

    // A second connection floods garbage quickly; still only errors.
    let mut ws2 = RawWs::connect(&server.ws).await;
    for i in 0..200 {
        ws2.send_text(format!("{{\"type\":\"join\",\"room\":{i}}}"))
            .await;
    }
    for _ in 0..200 {
        ws2.expect_error("bad_json").await;
    }

    // The healthy room never noticed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        a.shared.packets_from(&b.id, "video") > before + 30,
        "media kept flowing"
    );
    let health = http_get_json(&format!("{}/healthz", server.http)).await;
    assert_eq!(health["status"], "ok");
    // The gauges: the healthy room's pair at least (the bad clients may still be in).
    assert!(health["participants"].as_u64() >= Some(2), "{health}");
    assert!(health["rooms"].as_u64() >= Some(1), "{health}");
    let rooms = http_get_json(&format!("{}/api/rooms", server.http)).await;
    let healthy = rooms
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "healthy")
        .unwrap();
    assert_eq!(healthy["participants"].as_array().unwrap().len(), 2);
    let (status, room) = http::get(&format!("{}/api/rooms/healthy", server.http))
        .await
        .unwrap();
    assert_eq!(
        (status, room["participants"].as_array().map(Vec::len)),
        (200, Some(2))
    );
    let (status, err) = http::get(&format!("{}/api/rooms/nowhere", server.http))
        .await
        .unwrap();
    assert_eq!((status, err["code"].as_str()), (404, Some("unknown_room")));
    a.leave().await;
    b.leave().await;
}

/// Offers a parser or a negotiation must refuse without harm.
fn nasty_sdps() -> Vec<String> {
    let base = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n";
    let ice = "a=ice-ufrag:a\r\na=ice-pwd:bbbbbbbbbbbbbbbbbbbbbbbb\r\na=setup:actpass\r\n";
    vec![
        String::new(),
        "\u{0}\u{1}\u{2}".repeat(100),
        // No ICE credentials or fingerprint.
        format!("{base}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\n"),
        // A fingerprint that is not one, an extension id out of range.
        format!("{base}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n{ice}a=fingerprint:sha-256 AB:CD\r\na=sendonly\r\na=extmap:300 urn:x\r\na=ssrc-group:FID 1\r\n"),
        // 300 media sections.
        format!("{base}{}", "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n".repeat(300)),
        // Nonsense port, transport, rtpmap and fmtp, simulcast without rids.
        format!("{base}m=video 99999999 RTP/AVP 96 97\r\na=mid:0\r\na=rtpmap:96 H264/abc\r\na=fmtp:96 profile-level-id=zz\r\na=simulcast:send 1;2\r\n"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_rate_limited_and_its_room_keeps_everyone() {
    let server = start_server().await;
    let a = client::join(&server.ws, "flood", "Ada").await;
    let b = client::join(&server.ws, "flood", "Bob").await;
    assert!(
        wait_until(20, || a.shared.packets_from(&b.id, "video") > 30).await,
        "room is up"
    );
    let mut eve = RawWs::connect(&server.ws).await;
    eve.send_json(json!({"type":"join","room":"flood","name":"Eve"}))
        .await;
    eve.expect_type("joined", 10).await;
    // Every mute fans out to everyone else in the room: 5,000 of them in a burst.
    for i in 0..5_000 {
        eve.send_json(json!({"type":"mute","kind":"audio","muted": i % 2 == 0}))
            .await;
    }
    eve.expect_error("rate_limited").await;
    let before = a.shared.packets_from(&b.id, "video");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let room = http_get_json(&format!("{}/api/rooms/flood", server.http)).await;
    assert_eq!(
        room["participants"].as_array().map(Vec::len),
        Some(3),
        "nobody was dropped for falling behind: {room}"
    );
    assert!(
        a.shared.packets_from(&b.id, "video") > before + 30,
        "media keeps flowing"
    );
    let mutes_seen = a
        .shared
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "mute")
        .count();
    assert!(
        mutes_seen < 1_000,
        "Ada heard {mutes_seen} of Eve's 5,000 mutes: the excess never reached her"
    );
}
