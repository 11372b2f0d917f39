//! A participant whose media cannot go over UDP straight to the server meets one whose
//! media can, with webrtc-rs clients (sans-I/O `rtc` connections on a media thread):
//! once over ICE-TCP to the media port number (RFC 4571 frames), once relayed through
//! the embedded TURN server with the credentials it was handed in `joined`. Both receive
//! each other's audio and video, and the server's counters show which way it went. The
//! browser side of the same is tests/e2e/firewall.test.mjs and turn-embedded.test.mjs.

mod common;

use std::time::{Duration, Instant};

use common::{http_get_json, start_server_with, TestServer};
use switchyard_synthetic::link::Transport;
use switchyard_synthetic::lite::LiteParticipant;
use switchyard_synthetic::media::MediaPlan;
use switchyard_synthetic::pool::Pool;

async fn server() -> TestServer {
    start_server_with(|c| {
        c.media.ice_tcp = true;
        c.turn.udp_port = Some(0);
        // The raw participants answer pings through their signaling task; keep them.
        c.liveness_timeout = Duration::from_secs(120);
    })
    .await
}

/// Ada over `transport`, Bob over UDP, in one room: both must receive the other's audio
/// and video (100 video packets each way) within 15 s. Returns the server's stats.
async fn meet(server: &TestServer, room: &str, transport: Transport) -> serde_json::Value {
    let pool = Pool::start(room).expect("media thread");
    let ip = "127.0.0.1".parse().unwrap();
    let started = Instant::now();
    let ada = LiteParticipant::join_via(
        &pool,
        &server.ws,
        room,
        "Ada",
        MediaPlan::default(),
        ip,
        transport.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("Ada joins over {transport:?}: {e}"));
    let bob = LiteParticipant::join(&pool, &server.ws, room, "Bob", MediaPlan::default(), ip)
        .await
        .expect("Bob joins over UDP");
    let flowing = common::wait_until(15, || {
        ada.shared.packets_from(&bob.id, "video") > 100
            && bob.shared.packets_from(&ada.id, "video") > 100
            && ada.shared.packets_from(&bob.id, "audio") > 10
            && bob.shared.packets_from(&ada.id, "audio") > 10
    })
    .await;
    println!(
        "{transport:?}: after {:?} Ada got {} video / {} audio packets from Bob, Bob {} / {} from Ada",
        started.elapsed(),
        ada.shared.packets_from(&bob.id, "video"),
        ada.shared.packets_from(&bob.id, "audio"),
        bob.shared.packets_from(&ada.id, "video"),
        bob.shared.packets_from(&ada.id, "audio"),
    );
    assert!(
        flowing,
        "audio and video flow both ways with Ada on {transport:?}"
    );
    let stats = http_get_json(&format!("{}/api/stats", server.http)).await;
    ada.leave().await;
    bob.leave().await;
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_on_ice_tcp_meets_one_on_udp() {
    let server = server().await;
    let stats = meet(&server, "over-tcp", Transport::Tcp).await;
    println!(
        "ICE-TCP: {} connections, {} frames in, {} out",
        stats["tcp_connections_accepted"], stats["tcp_frames_in"], stats["tcp_frames_out"]
    );
    assert!(stats["tcp_connections_accepted"].as_u64().unwrap() >= 1);
    assert!(stats["tcp_frames_in"].as_u64().unwrap() > 100);
    assert!(stats["tcp_frames_out"].as_u64().unwrap() > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_relayed_by_the_embedded_turn_server_meets_one_on_udp() {
    let server = server().await;
    let stats = meet(&server, "over-turn", Transport::Turn).await;
    let turn = &stats["turn"];
    println!("TURN: {turn}");
    assert_eq!(turn["allocations"].as_u64(), Some(1));
    assert!(turn["relayed_bytes_to_peers"].as_u64().unwrap() > 50_000);
    assert!(turn["relayed_bytes_to_clients"].as_u64().unwrap() > 50_000);
    assert_eq!(
        stats["tcp_connections_accepted"].as_u64(),
        Some(0),
        "not over TCP"
    );
}
