//! Three headless webrtc-rs participants hold a meeting through a real server.

mod common;

use std::time::Duration;

use common::client::{self, OPUS_PT, VP8_PT};
use common::{http_get_json, start_server, wait_until};
use serde_json::json;

const MIN_PACKETS: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_receive_each_other_and_survive_a_departure() {
    let server = start_server().await;
    let a = client::join(&server.ws, "standup", "Ada").await;
    let b = client::join(&server.ws, "standup", "Bob").await;
    let c = client::join(&server.ws, "standup", "Cy").await;
    let all = [&a, &b, &c];

    // Everyone receives both kinds from both others.
    let everyone_receives = || {
        all.iter().all(|me| {
            all.iter().filter(|o| o.id != me.id).all(|o| {
                me.shared.packets_from(&o.id, "video") >= MIN_PACKETS
                    && me.shared.packets_from(&o.id, "audio") >= MIN_PACKETS
            })
        })
    };
    let ok = wait_until(30, everyone_receives).await;
    for me in all {
        for o in all.iter().filter(|o| o.id != me.id) {
            eprintln!(
                "{} <- {}: video {} audio {}",
                me.id,
                o.id,
                me.shared.packets_from(&o.id, "video"),
                me.shared.packets_from(&o.id, "audio")
            );
        }
    }
    assert!(
        ok,
        "every participant receives video and audio from the other two"
    );

    // Rewritten headers are consistent per leg: one SSRC, the negotiated PT, contiguous
    // sequence numbers, and never the publisher's own SSRC.
    for me in all {
        for o in all.iter().filter(|o| o.id != me.id) {
            let own = o.shared.own_ssrcs.lock().unwrap().clone();
            for (kind, pt) in [("video", VP8_PT), ("audio", OPUS_PT)] {
                let s = me.shared.stats(&o.id, kind).unwrap();
                assert_eq!(s.ssrcs.len(), 1, "{kind} leg keeps one SSRC: {s:?}");
                assert!(
                    !own.contains(s.ssrcs.iter().next().unwrap()),
                    "SSRC rewritten per leg"
                );
                assert_eq!(
                    s.payload_types.iter().copied().collect::<Vec<_>>(),
                    vec![pt]
                );
                assert!(
                    s.seq_discontinuities * 100 <= s.packets,
                    "{kind} sequence numbers are contiguous on loopback: {s:?}"
                );
            }
        }
    }
    let participants =
        |v: &serde_json::Value| v[0]["participants"].as_array().map_or(0, |p| p.len());
    assert_eq!(
        participants(&http_get_json(&format!("{}/api/rooms", server.http)).await),
        3
    );

    // Cy leaves: the others are told, forwarding to and from Cy stops, the rest goes on.
    let cy = c.id.clone();
    c.leave().await;
    let told = wait_until(5, || {
        [&a, &b].iter().all(|me| {
            me.shared.saw_message(|m| {
                m["type"] == "participant_left" && m["participant_id"] == cy.as_str()
            })
        })
    })
    .await;
    assert!(told, "Ada and Bob are told that Cy left");
    assert!(
        [&a, &b].iter().all(|me| me.shared.saw_message(
            |m| m["type"] == "track_unpublished" && m["participant_id"] == cy.as_str()
        )),
        "and that Cy's tracks are gone"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let from_cy = a.shared.packets_from(&cy, "video");
    let ab = a.shared.packets_from(&b.id, "video");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        a.shared.packets_from(&cy, "video"),
        from_cy,
        "nothing from Cy after leaving"
    );
    assert!(
        a.shared.packets_from(&b.id, "video") > ab + 30,
        "Ada still receives Bob"
    );
    assert_eq!(
        participants(&http_get_json(&format!("{}/api/rooms", server.http)).await),
        2
    );
    a.leave().await;
    b.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_plis_reach_the_publisher_throttled() {
    let server = start_server().await;
    let a = client::join(&server.ws, "pli", "Ada").await;
    let b = client::join(&server.ws, "pli", "Bob").await;
    assert!(
        wait_until(20, || b.shared.packets_from(&a.id, "video") >= MIN_PACKETS).await,
        "Bob receives Ada"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = a
        .shared
        .plis_received
        .load(std::sync::atomic::Ordering::Relaxed);
    // 30 PLIs in 3 s from Bob: Ada must see about one per second, not thirty.
    b.send_plis(&a.id, 30, Duration::from_millis(100))
        .await
        .expect("receiving Ada's video");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let got = a
        .shared
        .plis_received
        .load(std::sync::atomic::Ordering::Relaxed)
        - before;
    eprintln!("30 PLIs from the subscriber -> {got} keyframe requests at the publisher");
    assert!((1..=5).contains(&got), "throttled to about 1/s, got {got}");
    let stats = http_get_json(&format!("{}/api/stats", server.http)).await;
    assert!(
        stats["keyframe_requests_from_subscribers"]
            .as_u64()
            .unwrap()
            >= 25,
        "{stats}"
    );
    a.leave().await;
    b.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_participant_is_removed_and_the_others_are_told() {
    let server = start_server().await;
    let a = client::join(&server.ws, "crash", "Ada").await;
    let b = client::join(&server.ws, "crash", "Bob").await;
    assert!(wait_until(20, || a.shared.packets_from(&b.id, "video") > 0).await);
    let bob = b.id.clone();
    b.crash().await;
    let told = wait_until(15, || {
        a.shared
            .saw_message(|m| m["type"] == "participant_left" && m["participant_id"] == bob.as_str())
    })
    .await;
    assert!(told, "Ada is told within 15 s that Bob vanished");
    a.send(json!({"type":"mute","kind":"audio","muted":true}));
    a.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_is_forwarded_with_the_subscribers_payload_type() {
    use common::client::Video;
    let server = start_server().await;
    let a = client::join_with(&server.ws, "h264", "Ada", Video::H264).await;
    let b = client::join(&server.ws, "h264", "Bob").await;
    let ok = wait_until(20, || b.shared.packets_from(&a.id, "video") >= MIN_PACKETS).await;
    assert!(
        ok,
        "Bob receives Ada's H.264: {:?}",
        b.shared.stats(&a.id, "video")
    );
    // The payload type is the one Bob's connection negotiated for H.264: one of the
    // H.264 payload types in the server's offers to him (both clients offer rtc's
    // browser-like list, with H.264 in several profiles).
    let offered_h264: Vec<u8> = b
        .shared
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "offer")
        .filter_map(|m| m["sdp"].as_str().map(str::to_owned))
        .flat_map(|sdp| sdp.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|l| {
            let rest = l.strip_prefix("a=rtpmap:")?;
            let (pt, codec) = rest.split_once(' ')?;
            codec
                .starts_with("H264/")
                .then(|| pt.parse().ok())
                .flatten()
        })
        .collect();
    let s = b.shared.stats(&a.id, "video").unwrap();
    let received: Vec<u8> = s.payload_types.into_iter().collect();
    assert_eq!(
        received.len(),
        1,
        "one payload type on the leg: {received:?}"
    );
    assert!(
        offered_h264.contains(&received[0]),
        "H.264 arrives as {received:?}, one of the server's H.264 offers to Bob {offered_h264:?}"
    );
    assert!(
        wait_until(20, || a.shared.packets_from(&b.id, "video") >= MIN_PACKETS).await,
        "and Ada receives Bob's VP8"
    );
    a.leave().await;
    b.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_goes_silent_is_removed_by_the_heartbeat() {
    let server = start_server().await;
    let a = client::join(&server.ws, "silent", "Ada").await;
    // A signaling connection that joins and then never reads again: it answers no pings,
    // like a browser whose network vanished without closing TCP.
    let mut ghost = common::RawWs::connect(&server.ws).await;
    ghost
        .send_json(json!({"type":"join","room":"silent","name":"Ghost"}))
        .await;
    let joined = ghost.expect_type("joined", 10).await;
    let ghost_id = joined["participant_id"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let told = wait_until(20, || {
        a.shared.saw_message(|m| {
            m["type"] == "participant_left" && m["participant_id"] == ghost_id.as_str()
        })
    })
    .await;
    let took = started.elapsed();
    eprintln!("silent participant removed after {took:?}");
    assert!(told, "Ada is told the silent participant left");
    assert!(
        took <= Duration::from_secs(16),
        "within about 10-15 s, took {took:?}"
    );
    drop(ghost);
    a.leave().await;
}
