//! The HTTP listener's own limits (issue 17), against a real server on 127.0.0.1:0:
//! connections that send half a request, or nothing, are closed after the header
//! timeout and counted, and the server's descriptors come back to where they were;
//! one address holding the most connections allowed is refused another (counted) while
//! another address is not, and a closed WebSocket gives its place back.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::{closed_within, http_get_json, open_fds, start_server_with, RawWs};

fn addr_of(server: &common::TestServer) -> SocketAddr {
    server.http.trim_start_matches("http://").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_and_silent_connections_are_closed_after_the_header_timeout() {
    let server = start_server_with(|c| c.http_header_timeout = Duration::from_secs(1)).await;
    let addr = addr_of(&server);
    // Warm up the server's own descriptors (its first request) before the baseline.
    http_get_json(&format!("{}/healthz", server.http)).await;
    let baseline = open_fds();

    const EACH: usize = 50;
    let mut stalled = Vec::new();
    for _ in 0..EACH {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: ")
            .await
            .unwrap();
        stalled.push(s);
    }
    let mut silent = Vec::new();
    for _ in 0..EACH {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let opened = Instant::now();
    // Meanwhile a well-behaved client is served.
    assert_eq!(
        http_get_json(&format!("{}/healthz", server.http)).await["status"],
        "ok"
    );
    let mut closed = 0;
    for s in stalled.iter_mut().chain(silent.iter_mut()) {
        if closed_within(s, 5).await {
            closed += 1;
        }
    }
    let took = opened.elapsed();
    eprintln!(
        "{closed} of {} stalled connections closed {took:?} after opening",
        2 * EACH
    );
    assert_eq!(closed, 2 * EACH, "every stalled connection was closed");
    assert!(
        took < Duration::from_secs(4),
        "within the 1 s timeout: {took:?}"
    );
    let stats = http_get_json(&format!("{}/api/stats", server.http)).await;
    eprintln!("http_header_timeouts {}", stats["http_header_timeouts"]);
    assert!(
        stats["http_header_timeouts"].as_u64() >= Some(EACH as u64),
        "the half requests were counted: {stats}"
    );
    drop(stalled);
    drop(silent);
    // Both ends' descriptors are gone: the server holds nothing for them.
    let mut now = open_fds();
    for _ in 0..30 {
        if now <= baseline + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = open_fds();
    }
    eprintln!("descriptors: {baseline} before, {now} after");
    assert!(
        now <= baseline + 2,
        "descriptors back to baseline: {baseline} -> {now}"
    );
}

/// An HTTP GET over a connection from `local`: whether the server answered it.
async fn answered_from(local: &str, addr: SocketAddr) -> (bool, Option<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return (false, None);
    }
    let mut buf = [0u8; 512];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => (buf.starts_with(b"HTTP/1.1 200"), Some(s)),
        _ => (false, None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_capped_and_others_are_not() {
    const CAP: usize = 4;
    let server = start_server_with(|c| c.max_connections_per_ip = CAP).await;
    let addr = addr_of(&server);
    // Three WebSockets in a meeting and one keep-alive HTTP connection: the cap.
    let mut sockets = Vec::new();
    for i in 0..CAP - 1 {
        let mut ws = RawWs::connect(&server.ws).await;
        ws.send_json(json!({"type": "join", "room": "capped", "name": format!("P{i}")}))
            .await;
        ws.expect_type("joined", 5).await;
        sockets.push(ws);
    }
    let (ok, held) = answered_from("127.0.0.1", addr).await;
    assert!(ok, "the fourth connection is within the cap");
    let (refused, _) = answered_from("127.0.0.1", addr).await;
    assert!(!refused, "a fifth from the same address is refused");
    let (other, _) = answered_from("127.0.0.2", addr).await;
    assert!(other, "another address is not affected");
    // A WebSocket that closes gives its place back.
    let mut leaving = sockets.pop().unwrap();
    leaving.send_json(json!({"type": "leave"})).await;
    assert_eq!(leaving.close_code_within(5).await, Some(1000));
    drop(leaving);
    let mut again = false;
    for _ in 0..30 {
        if answered_from("127.0.0.1", addr).await.0 {
            again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again, "the place a closed WebSocket held is free again");
    drop(held);
    let stats = http_get_json_from_other(&server).await;
    eprintln!(
        "http_connections_refused {}",
        stats["http_connections_refused"]
    );
    assert!(
        stats["http_connections_refused"].as_u64() >= Some(1),
        "{stats}"
    );
}

/// /api/stats read from 127.0.0.3, whatever 127.0.0.1 holds.
async fn http_get_json_from_other(server: &common::TestServer) -> serde_json::Value {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(addr_of(server)).await.unwrap();
    s.write_all(b"GET /api/stats HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut body))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {text}"))
}
