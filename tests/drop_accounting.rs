//! Every RTP packet a publisher sends is accounted for (issue 17): forwarded on a leg, or
//! dropped for a named cause, and the counters add up. A real server, a simulcast
//! publisher and two subscribers on synthetic (sans-I/O rtc) connections go through the
//! causes a meeting meets: the publisher alone (no subscribers), simulcast layers a
//! leg is not on (other layer), a
//! subscriber too slow for any video layer (paused), an administrator's mute
//! (silenced). Then, live and after everyone left:
//! - per leg: offered + replayed == forwarded + dropped by cause;
//! - per room: packets in == unknown track + no subscribers + silenced + routed;
//! - the shard: RTP in == no room + the rooms' packets in, and what the legs forwarded
//!   == what went out (rtp_forwarded) + no leg + write errors;
//! - what a subscriber received is what its leg forwarded (loopback loses nothing).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_synthetic::http;
use switchyard_synthetic::lite::LiteParticipant;
use switchyard_synthetic::pool::Pool;
use switchyard_synthetic::MediaPlan;

use common::{http_get_json, start_server};

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// offered + replayed == forwarded + dropped, for one leg's (or a sum of legs') counts.
fn leg_adds_up(c: &Value) -> bool {
    let dropped =
        n(&c["paused"]) + n(&c["other_layer"]) + n(&c["awaiting_keyframe"]) + n(&c["stale"]);
    n(&c["offered"]) + n(&c["replayed"]) == n(&c["forwarded"]) + dropped
}

/// The leg counts of `subscriber`'s leg for `track` in a stats snapshot.
fn leg_of(stats: &Value, subscriber: &str, track: &str) -> Option<Value> {
    stats["shards"]
        .as_array()?
        .iter()
        .flat_map(|s| s["downlinks"].as_array().cloned().unwrap_or_default())
        .find(|d| d["participant_id"] == subscriber)?["leg_counts"]
        .as_array()?
        .iter()
        .find(|l| l[0] == track)
        .map(|l| l[1].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_packet_is_forwarded_or_dropped_for_a_counted_cause() {
    let server = start_server().await;
    let stats_url = format!("{}/api/stats", server.http);
    let pool = Pool::start("accounting").expect("media thread");
    let ip = "127.0.0.1".parse().unwrap();
    let plan = MediaPlan {
        simulcast: true,
        video_packet_bytes: 600,
        ..MediaPlan::default()
    };
    let publisher = LiteParticipant::join(&pool, &server.ws, "ledger", "Pub", plan, ip)
        .await
        .expect("publisher joins");
    // Alone for a while: its packets have nobody to go to.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fast = LiteParticipant::join(&pool, &server.ws, "ledger", "Fast", MediaPlan::none(), ip)
        .await
        .expect("fast subscriber joins");
    let slow = LiteParticipant::join(&pool, &server.ws, "ledger", "Slow", MediaPlan::none(), ip)
        .await
        .expect("slow subscriber joins");
    // Room for audio, not for the lowest video layer (about 145 kbit/s).
    slow.shared
        .downlink_limit_bps
        .store(90_000, Ordering::Relaxed);
    let mut video = String::new();
    let mut audio = String::new();
    for _ in 0..100 {
        let s = http_get_json(&stats_url).await;
        for p in s["shards"][0]["publications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if p["participant_id"] == publisher.id.as_str() {
                let id = p["track_id"].as_str().unwrap_or_default().to_string();
                if p["layers"].as_array().is_some_and(|l| l.len() == 3) {
                    video = id;
                } else {
                    audio = id;
                }
            }
        }
        if !video.is_empty()
            && !audio.is_empty()
            && fast.shared.packets_from(&publisher.id, "video") > 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !video.is_empty() && !audio.is_empty(),
        "both tracks published"
    );
    assert!(
        fast.shared.packets_from(&publisher.id, "video") > 200,
        "Fast receives video"
    );

    // An administrator mutes the microphone for a second (dev mode: no credentials).
    let mute_url = format!(
        "{}/api/admin/rooms/ledger/participants/{}/mute",
        server.http, publisher.id
    );
    for muted in [true, false] {
        let (status, _) = http::call(
            &mute_url,
            "POST",
            Some(&json!({"kind": "audio", "muted": muted})),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;

    // Live: each leg adds up (one shard's snapshot, taken on its own thread at once).
    let live = http_get_json(&stats_url).await;
    let mut legs_seen = 0;
    for d in live["shards"][0]["downlinks"].as_array().unwrap() {
        for leg in d["leg_counts"].as_array().unwrap() {
            legs_seen += 1;
            assert!(
                leg_adds_up(&leg[1]),
                "leg {} of {}: {}",
                leg[0],
                d["participant_id"],
                leg[1]
            );
        }
    }
    assert_eq!(legs_seen, 4, "two subscribers, two legs each: {live}");
    let fast_video = leg_of(&live, &fast.id, &video).unwrap();
    let slow_video = leg_of(&live, &slow.id, &video).unwrap();
    eprintln!("Fast's video leg: {fast_video}");
    eprintln!("Slow's video leg: {slow_video}");
    assert!(
        n(&fast_video["other_layer"]) > 0,
        "simulcast: two of three layers skip Fast's leg"
    );
    assert!(
        n(&slow_video["paused"]) > 0,
        "Slow's video leg was paused: {slow_video}"
    );
    // What Fast's leg forwarded reached Fast, less what went before its connection was
    // up (counted as not_connected, for both subscribers together) and the last few
    // in flight as the snapshot is taken.
    let received = fast.shared.packets_from(&publisher.id, "video");
    let forwarded = n(&fast_video["forwarded"]);
    let before_connected = n(&live["rtp_dropped"]["not_connected"]);
    eprintln!(
        "Fast received {received} video packets of {forwarded} its leg forwarded \
         ({before_connected} dropped before a subscriber was connected)"
    );
    assert!(
        received + before_connected + 20 >= forwarded,
        "{received} of {forwarded}"
    );
    assert!(received <= forwarded, "{received} of {forwarded}");

    // Everyone leaves; the room finishes, and its counts stay in the totals.
    fast.leave().await;
    slow.leave().await;
    publisher.leave().await;
    let mut after = Value::Null;
    for _ in 0..50 {
        after = http_get_json(&stats_url).await;
        if after["shards"][0]["peers"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after["shards"][0]["peers"], 0, "everyone left");
    let rooms = &after["rtp_rooms"];
    let dropped = &after["rtp_dropped"];
    eprintln!("rooms: {rooms}");
    eprintln!("dropped: {dropped}");
    eprintln!(
        "rtp_in {} rtp_forwarded {} unknown_ssrc {}",
        after["rtp_in"], after["rtp_forwarded"], after["rtp_in_unrouted"]
    );
    assert!(
        leg_adds_up(&rooms["legs"]),
        "all legs, closed ones included: {rooms}"
    );
    assert_eq!(
        n(&rooms["packets_in"]),
        n(&rooms["unknown_track"])
            + n(&rooms["no_subscribers"])
            + n(&rooms["silenced"])
            + n(&rooms["routed"]),
        "the room's packets: {rooms}"
    );
    assert_eq!(
        n(&after["rtp_in"]),
        n(&dropped["no_room"]) + n(&rooms["packets_in"]),
        "the shard's packets"
    );
    assert_eq!(
        n(&rooms["legs"]["forwarded"]),
        n(&after["rtp_forwarded"])
            + n(&dropped["no_leg"])
            + n(&dropped["not_connected"])
            + n(&dropped["write_error"]),
        "what the legs forwarded went out"
    );
    // (Awaiting a keyframe is counted too, but on loopback the synthetic publisher's
    // answer to the leg's keyframe request is its very next frame: nothing waits.)
    for cause in ["no_subscribers", "silenced", "paused", "other_layer"] {
        assert!(n(&dropped[cause]) > 0, "{cause} was exercised: {dropped}");
    }
    // And /metrics says the same.
    let (_, text) = http::request_full(&format!("{}/metrics", server.http), "GET", None, None)
        .await
        .unwrap();
    let line = format!(
        "switchyard_rtp_dropped_packets_total{{cause=\"silenced\"}} {}",
        dropped["silenced"]
    );
    assert!(text.contains(&line), "{line} in /metrics");
}
