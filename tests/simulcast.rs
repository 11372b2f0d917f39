//! Simulcast and downlink bandwidth estimation against a real server: a synthetic
//! publisher sends three layers (q, h, f); two subscribers receive it, one of them
//! through a simulated slow downlink (a policer in front of its connection). The server
//! must find out from that subscriber's transport-cc feedback alone, give it the low
//! layer while the others keep the full one, and give the full layer back once the
//! limit is lifted. Everything is read from the server's `/api/stats`.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_synthetic::lite::LiteParticipant;
use switchyard_synthetic::pool::Pool;
use switchyard_synthetic::MediaPlan;

use common::{http_get_json, start_server};

/// The layer (forwarded, chosen) `subscriber` gets of `track`, from `/api/stats`.
fn leg_layer(stats: &Value, subscriber: &str, track: &str) -> (Option<u64>, Option<u64>) {
    let downlinks = stats["shards"][0]["downlinks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(d) = downlinks.iter().find(|d| d["participant_id"] == subscriber) else {
        return (None, None);
    };
    let legs = d["legs"].as_array().cloned().unwrap_or_default();
    legs.iter()
        .find(|l| l[0] == track)
        .map_or((None, None), |l| (l[1].as_u64(), l[2].as_u64()))
}

fn estimate(stats: &Value, subscriber: &str) -> Option<u64> {
    stats["shards"][0]["downlinks"]
        .as_array()?
        .iter()
        .find(|d| d["participant_id"] == subscriber)?["estimate_bps"]
        .as_u64()
}

/// One line of `subscriber`'s downlink state for a failure's timeline.
fn downlink_line(stats: &Value, subscriber: &str, at: Duration) -> String {
    let Some(d) = stats["shards"][0]["downlinks"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["participant_id"] == subscriber))
    else {
        return format!("{:5.2}s: no downlink", at.as_secs_f64());
    };
    format!(
        "{:5.2}s: estimate {} allocated {} wanted {} probes {} feedbacks {} loss {:.3} settled {:.3} legs {}",
        at.as_secs_f64(),
        d["estimate_bps"],
        d["allocated_bps"],
        d["wanted_bps"],
        d["probes"],
        d["twcc_feedbacks"],
        d["loss"].as_f64().unwrap_or(-1.0),
        d["settled_loss"].as_f64().unwrap_or(-1.0),
        d["legs"],
    )
}

/// Polls `/api/stats` every 250 ms until `done` holds, for at most `secs`; returns how
/// long it took.
async fn until(http: &str, secs: u64, mut done: impl FnMut(&Value) -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        let stats = http_get_json(&format!("{http}/api/stats")).await;
        if done(&stats) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_subscriber_gets_the_low_layer_and_recovers() {
    let server = start_server().await;
    let pool = Pool::start("simulcast-test").expect("media thread");
    let ip = "127.0.0.1".parse().unwrap();
    // Layers of about 145 kbit/s (q), 290 kbit/s (h) and 820 kbit/s (f).
    let plan = MediaPlan {
        simulcast: true,
        video_packet_bytes: 600,
        ..MediaPlan::default()
    };
    let publisher = LiteParticipant::join(&pool, &server.ws, "sim", "Pub", plan, ip)
        .await
        .expect("publisher joins");
    let fast = LiteParticipant::join(&pool, &server.ws, "sim", "Fast", MediaPlan::none(), ip)
        .await
        .expect("fast subscriber joins");
    let slow = LiteParticipant::join(&pool, &server.ws, "sim", "Slow", MediaPlan::none(), ip)
        .await
        .expect("slow subscriber joins");

    // The publisher's video, once its three layers arrive.
    let mut video = String::new();
    let arrived = until(&server.http, 20, |s| {
        let pubs = s["shards"][0]["publications"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        pubs.iter()
            .find(|p| {
                p["participant_id"] == publisher.id.as_str()
                    && p["layers"].as_array().is_some_and(|l| l.len() == 3)
            })
            .is_some_and(|p| {
                video = p["track_id"].as_str().unwrap_or_default().to_string();
                p["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|l| l[1].as_u64() > Some(0))
            })
    })
    .await;
    assert!(arrived.is_some(), "three layers arrive at the server");

    // Unlimited: both subscribers get the full layer.
    let full = until(&server.http, 20, |s| {
        leg_layer(s, &fast.id, &video).0 == Some(2) && leg_layer(s, &slow.id, &video).0 == Some(2)
    })
    .await;
    assert!(full.is_some(), "both subscribers reach the full layer");

    if std::env::var("SIMULCAST_TRACE").is_ok() {
        for i in 0..40 {
            if i == 12 {
                slow.shared
                    .downlink_limit_bps
                    .store(350_000, Ordering::Relaxed);
            }
            if i == 28 {
                slow.shared.downlink_limit_bps.store(0, Ordering::Relaxed);
            }
            let s = http_get_json(&format!("{}/api/stats", server.http)).await;
            println!(
                "{i:2} fast {:?} {:?} slow {:?} {:?}",
                estimate(&s, &fast.id),
                leg_layer(&s, &fast.id, &video),
                estimate(&s, &slow.id),
                leg_layer(&s, &slow.id, &video)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // 350 kbit/s for Slow: room for q and audio, not for h or f.
    slow.shared
        .downlink_limit_bps
        .store(350_000, Ordering::Relaxed);
    let limited_at = Instant::now();
    let down = until(&server.http, 20, |s| {
        leg_layer(s, &slow.id, &video) == (Some(0), Some(0))
    })
    .await;
    let stats = http_get_json(&format!("{}/api/stats", server.http)).await;
    println!(
        "limit 350 kbit/s: low layer after {down:?}, slow estimate {:?}, fast estimate {:?}",
        estimate(&stats, &slow.id),
        estimate(&stats, &fast.id)
    );
    assert!(
        down.is_some(),
        "the throttled subscriber drops to the low layer: {} {}",
        stats["shards"][0]["downlinks"],
        stats["shards"][0]["publications"]
    );
    assert_eq!(
        leg_layer(&stats, &fast.id, &video).0,
        Some(2),
        "the other keeps full quality"
    );

    // It keeps receiving video while limited, never the full layer (the estimator may
    // probe upwards now and then: that is how it finds out when the limit goes).
    let before = slow.shared.packets_from(&publisher.id, "video");
    let mut layers_seen = Vec::new();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = http_get_json(&format!("{}/api/stats", server.http)).await;
        layers_seen.push(leg_layer(&s, &slow.id, &video).0);
    }
    let during = slow.shared.packets_from(&publisher.id, "video") - before;
    println!(
        "while limited: {during} video packets in 3 s, layers {layers_seen:?}, {} datagrams dropped by the policer",
        slow.shared.downlink_dropped.load(Ordering::Relaxed),
    );
    assert!(
        !layers_seen.contains(&Some(2)),
        "never the full layer while limited"
    );
    assert!(during >= 60, "video keeps flowing: {during} packets in 3 s");
    let _ = limited_at;

    // Lifted: probing finds the room again and the full layer comes back.
    slow.shared.downlink_limit_bps.store(0, Ordering::Relaxed);
    // What the slow subscriber's downlink looked like while it recovered, printed if it
    // does not (one CI run in a few dozen stayed on the low layer for 25 s).
    let mut timeline = Vec::new();
    let lifted = Instant::now();
    let back = until(&server.http, 25, |s| {
        timeline.push(downlink_line(s, &slow.id, lifted.elapsed()));
        leg_layer(s, &slow.id, &video).0 == Some(2)
    })
    .await;
    if back.is_none() {
        println!("recovery timeline:\n{}", timeline.join("\n"));
    }
    let stats = http_get_json(&format!("{}/api/stats", server.http)).await;
    println!(
        "limit lifted: full layer after {back:?}, estimate {:?}",
        estimate(&stats, &slow.id)
    );
    assert!(
        back.is_some(),
        "the full layer comes back after the limit is lifted: {stats}"
    );
    assert!(
        stats["probe_clusters"].as_u64() > Some(0),
        "recovery came from probing"
    );

    slow.leave().await;
    fast.leave().await;
    publisher.leave().await;
}
