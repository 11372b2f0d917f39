//! The media engine's one UDP port: many participants meet on it, and hostile datagrams
//! sprayed at it change nothing for a running meeting.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{client, http_get_json, start_server, start_server_with, wait_until};
use switchyard_synthetic::{MediaPlan, SyntheticParticipant};

/// The server's media port, from its stats.
async fn media_port(http: &str) -> u16 {
    let stats = http_get_json(&format!("{http}/api/stats")).await;
    let addr = stats["shards"][0]["udp_addr"].as_str().expect("udp_addr");
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// The ports of every `a=candidate` line in the SDPs a participant received.
fn candidate_ports(c: &SyntheticParticipant) -> Vec<u16> {
    let messages = c.shared.messages.lock().unwrap().clone();
    messages
        .iter()
        .filter_map(|m| m["sdp"].as_str())
        .flat_map(|sdp| sdp.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|l| {
            let l = l.strip_prefix("a=candidate:")?;
            l.split_whitespace().nth(5)?.parse().ok()
        })
        .collect()
}

/// UDP sockets in this process's network namespace bound to `port` (/proc/net/udp).
fn sockets_on_port(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let hex = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(&hex))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_participants_share_one_server_port() {
    let server = start_server().await;
    let port = media_port(&server.http).await;
    // Audio only, so twenty webrtc-rs clients on two cores keep up with 380 legs.
    let plan = MediaPlan {
        video: None,
        ..MediaPlan::default()
    };
    let mut clients = Vec::new();
    for i in 0..20 {
        let c = SyntheticParticipant::join(&server.ws, "crowd", &format!("p{i}"), plan)
            .await
            .unwrap_or_else(|e| panic!("participant {i} cannot join: {e}"));
        clients.push(c);
    }
    let everyone_hears_everyone = || {
        clients.iter().all(|me| {
            clients
                .iter()
                .filter(|o| o.id != me.id)
                .all(|o| me.shared.packets_from(&o.id, "audio") >= 20)
        })
    };
    assert!(
        wait_until(60, everyone_hears_everyone).await,
        "each of 20 participants hears the other 19"
    );
    for c in &clients {
        let ports = candidate_ports(c);
        assert!(!ports.is_empty(), "{} got the server's candidate", c.id);
        assert!(
            ports.iter().all(|p| *p == port),
            "every server candidate is the one port {port}: {ports:?}"
        );
    }
    let stats = http_get_json(&format!("{}/api/stats", server.http)).await;
    let shard = &stats["shards"][0];
    assert_eq!(stats["shards"].as_array().unwrap().len(), 1);
    assert_eq!(shard["peers"], 20);
    assert_eq!(
        shard["demux_addresses"], 20,
        "one selected address per client"
    );
    assert_eq!(sockets_on_port(port), 1, "one server socket holds the port");
    for (id, cipher) in shard["srtp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (&e[0], &e[1]))
    {
        assert_eq!(cipher, "SRTP_AEAD_AES_128_GCM", "{id}");
    }
}

/// Datagrams a rogue might send: garbage, truncations, STUN naming a real ufrag with
/// no valid integrity, DTLS and RTP/RTCP-looking records, oversized ones.
fn hostile(i: u32, ufrag: &str) -> Vec<u8> {
    let noise = |n: usize| -> Vec<u8> { (0..n).map(|k| (i as usize * 31 + k * 7) as u8).collect() };
    match i % 6 {
        0 => noise((i % 1500) as usize),
        1 => {
            let user = format!("{ufrag}:rogue");
            let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
            m.extend_from_slice(&i.to_be_bytes());
            m.extend_from_slice(&[9u8; 8]);
            m.extend_from_slice(&[0x00, 0x06]);
            m.extend_from_slice(&(user.len() as u16).to_be_bytes());
            m.extend_from_slice(user.as_bytes());
            while m.len() % 4 != 0 {
                m.push(0);
            }
            m.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]); // MESSAGE-INTEGRITY, wrong
            m.extend_from_slice(&[0xAB; 20]);
            let len = (m.len() - 20) as u16;
            m[2..4].copy_from_slice(&len.to_be_bytes());
            m
        }
        2 => {
            let mut d = vec![22, 254, 253, 0, 0];
            d.extend(noise(60));
            d
        }
        3 => {
            let mut rtp = vec![0x80, 96, (i >> 8) as u8, i as u8, 0, 0, 0, 1, 1, 2, 3, 4];
            rtp.extend(noise(200));
            rtp
        }
        4 => {
            let mut rtcp = vec![0x81, 206, 0, 2, 0, 0, 0, 1, 1, 2, 3, 4];
            rtcp.extend(noise(8));
            rtcp
        }
        _ => noise(9000),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_shrugs_off_datagrams_sprayed_at_its_port() {
    let server = start_server().await;
    let port = media_port(&server.http).await;
    let a = client::join(&server.ws, "sturdy", "Ada").await;
    let b = client::join(&server.ws, "sturdy", "Bob").await;
    let flowing = || {
        a.shared.packets_from(&b.id, "video") >= 100 && b.shared.packets_from(&a.id, "video") >= 100
    };
    assert!(wait_until(30, flowing).await, "the meeting flows first");
    // The server's real ufrag, from the SDP it sent Ada: rogue STUN reaches her connection.
    let ufrag = a
        .shared
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter_map(|m| m["sdp"].as_str().map(str::to_owned))
        .find_map(|sdp| {
            sdp.lines()
                .find_map(|l| l.strip_prefix("a=ice-ufrag:").map(str::to_owned))
        })
        .expect("server ufrag");

    // Video packets each publisher has sent so far (its next synthetic counter).
    let sent_so_far = || [&a, &b].map(|p| p.shared.video_sent.load(Ordering::Relaxed));
    let from = sent_so_far();
    let before = http_get_json(&format!("{}/api/stats", server.http)).await;
    let target = format!("127.0.0.1:{port}");
    let sent = tokio::task::spawn_blocking(move || {
        let rogue = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent = 0u32;
        // 30,000 datagrams over about 3 s; a bounded loop, loopback only.
        for i in 0..30_000u32 {
            if rogue.send_to(&hostile(i, &ufrag), &target).is_ok() {
                sent += 1;
            }
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        sent
    })
    .await
    .unwrap();
    let to = sent_so_far();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = http_get_json(&format!("{}/api/stats", server.http)).await;

    let delivered = |me: &SyntheticParticipant, publisher: &SyntheticParticipant, k: usize| {
        let s = me.shared.stats(&publisher.id, "video").unwrap();
        s.unique_in(from[k], to[k]) as f64 / (to[k] - from[k]).max(1) as f64
    };
    let (b_from_a, a_from_b) = (delivered(&b, &a, 0), delivered(&a, &b, 1));
    let dropped = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    eprintln!(
        "rogue sent {sent}; delivery during the spray: Bob<-Ada {b_from_a:.4}, Ada<-Bob {a_from_b:.4}; \
         demux drops: unknown ufrag {}, unknown address {}, garbage {}; refused by a connection {}",
        dropped("udp_unknown_ufrag"),
        dropped("udp_unknown_address"),
        dropped("udp_garbage"),
        dropped("rtc_read_errors"),
    );
    assert!(sent > 29_000, "the spray went out");
    assert!(
        b_from_a >= 0.999 && a_from_b >= 0.999,
        "delivery stays at least 99.9 %"
    );
    // The rogue knows Ada's ufrag but not her password: her connection never answers
    // it, so the demux never learns its address and drops everything else it sends
    // (DTLS, RTP, RTCP: half of the spray at least) before any connection sees it.
    assert!(
        dropped("udp_unknown_address") >= 10_000,
        "the rogue's address was never learned"
    );
    // And the meeting is still whole afterwards.
    let ids = |v: &serde_json::Value| v["participants"].as_array().map_or(0, Vec::len);
    let room = http_get_json(&format!("{}/api/rooms/sturdy", server.http)).await;
    assert_eq!(ids(&room), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_each_carry_their_own_rooms_on_their_own_port() {
    let server = start_server_with(|c| c.media.shards = 2).await;
    let shards = || async {
        let stats = http_get_json(&format!("{}/api/stats", server.http)).await;
        stats["shards"].as_array().cloned().unwrap_or_default()
    };
    let listed = shards().await;
    assert_eq!(listed.len(), 2);
    assert_ne!(
        listed[0]["udp_addr"], listed[1]["udp_addr"],
        "a port per shard"
    );

    // Rooms are spread by name: add two-person rooms until both shards hold one.
    let plan = MediaPlan {
        video: None,
        ..MediaPlan::default()
    };
    let mut pairs = Vec::new();
    for room in [
        "east", "north", "west", "south", "up", "down", "left", "right",
    ] {
        let a = SyntheticParticipant::join(&server.ws, room, "a", plan)
            .await
            .unwrap();
        let b = SyntheticParticipant::join(&server.ws, room, "b", plan)
            .await
            .unwrap();
        pairs.push((a, b));
        if shards().await.iter().all(|s| s["peers"].as_u64() > Some(0)) {
            break;
        }
    }
    assert!(
        shards().await.iter().all(|s| s["peers"].as_u64() > Some(0)),
        "both shards got rooms"
    );
    let all_hear = || {
        pairs.iter().all(|(a, b)| {
            a.shared.packets_from(&b.id, "audio") >= 20
                && b.shared.packets_from(&a.id, "audio") >= 20
        })
    };
    assert!(
        wait_until(30, all_hear).await,
        "every room carries its media"
    );
    // Each participant was told exactly one port: its room's shard's.
    let ports: Vec<u16> = shards()
        .await
        .iter()
        .map(|s| {
            s["udp_addr"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    for (a, b) in &pairs {
        let (pa, pb) = (candidate_ports(a), candidate_ports(b));
        assert!(
            pa.iter().chain(&pb).all(|p| *p == pa[0]),
            "one port per room"
        );
        assert!(ports.contains(&pa[0]));
    }
}
