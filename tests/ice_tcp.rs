//! Bad input on the ICE-TCP port (the media port number, engine/tcp.rs), against a real
//! server: a first frame that is not a STUN request of ours closes the connection at
//! once; connections that send nothing, or a length prefix and then stall (a slowloris),
//! are closed after the first-frame deadline (5 s); two hundred of them at once are all
//! closed, counted, and the descriptors come back. A browser meeting over ICE-TCP is in
//! tests/e2e/ice-tcp.test.mjs.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use common::{closed_within, http_get_json, open_fds, start_server_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_stalled_connections_on_the_tcp_port_are_closed_and_counted() {
    let server = start_server_with(|c| c.media.ice_tcp = true).await;
    let stats_url = format!("{}/api/stats", server.http);
    let stats = http_get_json(&stats_url).await;
    let media: SocketAddr = stats["shards"][0]["udp_addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let baseline = open_fds();

    // Not STUN: closed at once.
    let mut garbage = TcpStream::connect(media)
        .await
        .expect("ICE-TCP listens on the media port");
    garbage
        .write_all(&[0, 8, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4])
        .await
        .unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut garbage, 2).await,
        "a non-STUN first frame closes it"
    );
    eprintln!("garbage closed after {:?}", started.elapsed());

    // Silent ones and half-sent frames: closed after the first-frame deadline.
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(media).await.unwrap();
        if i % 2 == 0 {
            s.write_all(&[0x05, 0xdc, 0x00, 0x01]).await.unwrap(); // 1,500 bytes promised, 2 sent
        }
        stalled.push(s);
    }
    let mut closed = 0;
    for s in stalled.iter_mut() {
        if closed_within(s, 10).await {
            closed += 1;
        }
    }
    let took = opened.elapsed();
    eprintln!("{closed} of 200 stalled ICE-TCP connections closed {took:?} after opening");
    assert_eq!(closed, 200);
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "{took:?}"
    );
    let stats = http_get_json(&stats_url).await;
    eprintln!(
        "tcp_connections accepted {} refused {}",
        stats["tcp_connections_accepted"], stats["tcp_connections_refused"]
    );
    assert_eq!(stats["tcp_connections_accepted"], 201);
    assert_eq!(
        stats["tcp_connections_refused"], 201,
        "each of them refused, counted"
    );
    drop(stalled);
    drop(garbage);
    let mut now = open_fds();
    for _ in 0..30 {
        if now <= baseline + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = open_fds();
    }
    eprintln!("descriptors: {baseline} before, {now} after");
    assert!(now <= baseline + 2, "descriptors back: {baseline} -> {now}");
}
