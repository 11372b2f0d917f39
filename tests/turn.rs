//! The embedded TURN server (issue 18) against coturn's own client, `turnutils_uclient`
//! from Debian's `coturn` package (an implementation nobody here wrote; run-all.sh
//! installs it): it allocates and relays through our server over UDP, TCP and TLS with
//! the credentials a participant was handed in `joined`, and is refused with anything
//! else. Then the bad input: forged, expired and departed credentials, an allocation
//! flood, relaying to peers that are not ours, garbage and stalled TCP/TLS connections,
//! with descriptors back to where they were.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{closed_within, open_fds, start_server_with, RawWs, TestServer};
use serde_json::{json, Value};
use switchyard_synthetic::http;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A self-signed certificate for 127.0.0.1, written to a temporary directory.
fn test_cert() -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("switchyard-turn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// A server with TURN over UDP, TCP and TLS on any ports; `open_relay` lets it relay to
/// anything on 127.0.0.1 (turnutils_uclient relays between its own allocations).
async fn turn_server(open_relay: bool) -> TestServer {
    let (cert, key) = test_cert();
    start_server_with(move |c| {
        c.turn.udp_port = Some(0);
        c.turn.tcp_port = Some(0);
        c.turn.tls_port = Some(0);
        c.turn.tls_cert = Some(cert);
        c.turn.tls_key = Some(key);
        // The tests' participants hold a raw WebSocket that answers no ping: keep them
        // (and so their TURN credentials) for the test's length.
        c.liveness_timeout = Duration::from_secs(300);
        if open_relay {
            c.turn.allowed_peers = vec!["127.0.0.1".parse().unwrap()];
        }
    })
    .await
}

/// Joins over a raw WebSocket; the socket (keep it: leaving revokes the credentials)
/// and the embedded TURN server's entry of `joined.ice_servers`.
async fn join(server: &TestServer, name: &str) -> (RawWs, Value) {
    let mut ws = RawWs::connect(&server.ws).await;
    ws.send_json(json!({"type": "join", "room": "turn", "name": name}))
        .await;
    let joined = ws.expect_type("joined", 5).await;
    let ours = joined["ice_servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["urls"][0].as_str().unwrap_or("").starts_with("turn:"))
        .cloned()
        .expect("the embedded TURN server is in ice_servers");
    (ws, ours)
}

/// The port of `scheme:host:PORT?transport=...` among the server's URLs.
fn port_of(server: &Value, prefix: &str, transport: &str) -> u16 {
    let url = server["urls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|u| u.starts_with(prefix) && u.ends_with(&format!("transport={transport}")))
        .unwrap_or_else(|| panic!("no {prefix} {transport} URL in {server}"));
    let hostport = url[prefix.len()..].split('?').next().unwrap();
    hostport.rsplit(':').next().unwrap().parse().unwrap()
}

struct Uclient {
    allocated: bool,
    relayed_bytes: u64,
    out: String,
}

/// coturn's client: `clients` allocations relaying `messages` to each other.
fn uclient(user: &str, pass: &str, port: u16, flags: &[&str], clients: u32) -> Uclient {
    uclient_within(25, user, pass, port, flags, clients)
}

/// As `uclient`, killed after `secs` (a request the server drops is retried for long).
fn uclient_within(
    secs: u32,
    user: &str,
    pass: &str,
    port: u16,
    flags: &[&str],
    clients: u32,
) -> Uclient {
    let mut args: Vec<String> = ["-u", user, "-w", pass, "-p"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(port.to_string());
    args.extend(flags.iter().map(|s| s.to_string()));
    let m = clients.to_string();
    args.extend(
        [
            "-n",
            "5",
            "-m",
            &m,
            "-l",
            "120",
            "-y",
            "-e",
            "127.0.0.1",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg("turnutils_uclient")
        .args(&args)
        .output()
        .expect(
            "turnutils_uclient (Debian package coturn) is needed: tests/run-all.sh installs it",
        );
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Its summary line: "tot_send_bytes ~ 1200, tot_recv_bytes ~ 1200".
    let relayed_bytes = text
        .rsplit("tot_recv_bytes ~ ")
        .next()
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Uclient {
        allocated: out.status.success() && text.contains("tot_recv_bytes"),
        relayed_bytes,
        out: text,
    }
}

async fn turn_stats(server: &TestServer) -> Value {
    let stats = http::get_json(&format!("{}/api/stats", server.http))
        .await
        .unwrap();
    stats["turn"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturns_client_allocates_and_relays_over_udp_tcp_and_tls_with_a_participants_credentials()
{
    let server = turn_server(true).await;
    let (_ws, ice) = join(&server, "Ada").await;
    let user = ice["username"].as_str().unwrap().to_string();
    let pass = ice["credential"].as_str().unwrap().to_string();
    println!("Ada's TURN server entry: {}", ice["urls"]);
    for (label, port, flags) in [
        ("UDP", port_of(&ice, "turn:", "udp"), vec![]),
        ("TCP", port_of(&ice, "turn:", "tcp"), vec!["-t"]),
        ("TLS", port_of(&ice, "turns:", "tcp"), vec!["-t", "-S"]),
    ] {
        let started = Instant::now();
        let run = tokio::task::spawn_blocking({
            let (user, pass) = (user.clone(), pass.clone());
            move || {
                // turnutils_uclient picks its TLS version at random among those it
                // knows, TLS 1.0 and 1.1 included, which rustls (rightly) refuses: try
                // again when that is what happened.
                let mut run = uclient(&user, &pass, port, &flags, 1);
                for _ in 0..5 {
                    if run.allocated || !run.out.contains("handshake failure") {
                        break;
                    }
                    println!("{label}: the client offered an old TLS version; again");
                    run = uclient(&user, &pass, port, &flags, 1);
                }
                run
            }
        })
        .await
        .unwrap();
        if std::env::var("TURN_TEST_VERBOSE").is_ok() {
            println!("{}", run.out);
        }
        println!(
            "{label}: allocated {}, relayed back {} bytes in {:?}",
            run.allocated,
            run.relayed_bytes,
            started.elapsed()
        );
        println!(
            "  server's TURN counters now: {}",
            turn_stats(&server).await
        );
        assert!(
            run.allocated && run.relayed_bytes > 0,
            "coturn's client relays through our TURN over {label}:\n{}",
            &run.out[run.out.len().saturating_sub(2000)..]
        );
    }
    let turn = turn_stats(&server).await;
    println!("server's TURN counters: {turn}");
    assert!(turn["allocations"].as_u64().unwrap() >= 6, "{turn}");
    assert!(turn["relayed_bytes_to_peers"].as_u64().unwrap() > 0);
    assert!(turn["relayed_bytes_to_clients"].as_u64().unwrap() > 0);
    let metrics = http::get_text(&format!("{}/metrics", server.http))
        .await
        .unwrap()
        .1;
    assert!(metrics.contains("switchyard_turn_allocations_total"));
    assert!(metrics.contains("switchyard_turn_relayed_bytes_total{kind=\"to_peers\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_departed_and_flooding_credentials_and_foreign_peers_are_refused() {
    let server = turn_server(true).await;
    let (ws, ice) = join(&server, "Bob").await;
    let user = ice["username"].as_str().unwrap().to_string();
    let pass = ice["credential"].as_str().unwrap().to_string();
    let udp = port_of(&ice, "turn:", "udp");
    let (expiry, who) = user.split_once(':').unwrap();
    let blocking = |user: String, pass: String, clients: u32| {
        tokio::task::spawn_blocking(move || uclient(&user, &pass, udp, &[], clients))
    };

    // Another participant's name with Bob's password; Bob's name with a wrong password;
    // an expiry in the past: none allocates.
    let forged = blocking(format!("{expiry}:p999"), pass.clone(), 1)
        .await
        .unwrap();
    assert!(!forged.allocated, "forged name:\n{}", forged.out);
    let wrong = blocking(user.clone(), "not-the-password".into(), 1)
        .await
        .unwrap();
    assert!(!wrong.allocated, "wrong password:\n{}", wrong.out);
    // (An expired username is dropped unanswered: the client retries until it gives up.)
    let old = format!("{}:{who}", expiry.parse::<u64>().unwrap() - 7 * 3600);
    let expired = tokio::task::spawn_blocking(move || uclient_within(5, &old, "x", udp, &[], 1))
        .await
        .unwrap();
    assert!(!expired.allocated, "expired:\n{}", expired.out);

    // A flood: 12 clients under one participant's name get 8 allocations at most.
    let flood = blocking(user.clone(), pass.clone(), 12).await.unwrap();
    let turn = turn_stats(&server).await;
    println!("after the flood: {turn}");
    assert!(
        turn["refused_participant_quota"].as_u64().unwrap() > 0,
        "the per-participant quota fired: {turn}\n{}",
        &flood.out[flood.out.len().saturating_sub(1500)..]
    );
    assert!(turn["allocations_now"].as_u64().unwrap() <= 8, "{turn}");

    // Bob leaves: his credentials open nothing more.
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut departed = blocking(user.clone(), pass.clone(), 1).await.unwrap();
    while departed.allocated && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        departed = blocking(user.clone(), pass.clone(), 1).await.unwrap();
    }
    assert!(!departed.allocated, "departed:\n{}", departed.out);
    let turn = turn_stats(&server).await;
    println!("refusals: {turn}");
    assert!(
        turn["refused_credential"].as_u64().unwrap() > 0,
        "expired: {turn}"
    );
    assert!(turn["error_responses"].as_u64().unwrap() > 0, "{turn}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_relay_reaches_this_servers_media_sockets_only() {
    let server = turn_server(false).await;
    let (_ws, ice) = join(&server, "Cy").await;
    let user = ice["username"].as_str().unwrap().to_string();
    let pass = ice["credential"].as_str().unwrap().to_string();
    let udp = port_of(&ice, "turn:", "udp");
    // coturn's client relays between its own two allocations: peers that are not ours.
    let run = tokio::task::spawn_blocking(move || uclient(&user, &pass, udp, &[], 1))
        .await
        .unwrap();
    let turn = turn_stats(&server).await;
    println!(
        "relay to a foreign peer: relayed back {} bytes; {turn}",
        run.relayed_bytes
    );
    assert_eq!(run.relayed_bytes, 0, "nothing relayed:\n{}", run.out);
    assert!(
        turn["refused_forbidden_peer"].as_u64().unwrap() > 0,
        "{turn}"
    );
    assert_eq!(
        turn["relayed_bytes_to_peers"].as_u64().unwrap(),
        0,
        "{turn}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_stalled_tcp_and_tls_connections_are_closed_and_counted() {
    let server = turn_server(false).await;
    let (_ws, ice) = join(&server, "Di").await;
    let tcp: SocketAddr = format!("127.0.0.1:{}", port_of(&ice, "turn:", "tcp"))
        .parse()
        .unwrap();
    let tls: SocketAddr = format!("127.0.0.1:{}", port_of(&ice, "turns:", "tcp"))
        .parse()
        .unwrap();
    let fds_before = open_fds();
    let rss_before = rss_kib();

    // Garbage: no TURN frame at all.
    let mut junk = TcpStream::connect(tcp).await.unwrap();
    junk.write_all(&[0xff; 64]).await.unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut junk, 3).await,
        "garbage closes the connection"
    );
    println!("garbage on TCP closed after {:?}", started.elapsed());

    // 100 silent connections and 100 that send half a STUN header, on each port.
    let mut stalled = Vec::new();
    for i in 0..100 {
        for addr in [tcp, tls] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            if i % 2 == 1 {
                s.write_all(&[0x00, 0x01, 0x00]).await.unwrap();
            }
            stalled.push(s);
        }
    }
    let started = Instant::now();
    for s in &mut stalled {
        assert!(closed_within(s, 8).await, "a stalled connection is closed");
    }
    println!(
        "{} stalled connections all closed {:?} after opening",
        stalled.len(),
        started.elapsed()
    );
    drop(stalled);
    drop(junk);
    let turn = turn_stats(&server).await;
    println!("{turn}");
    assert!(turn["frames_refused"].as_u64().unwrap() >= 1, "{turn}");
    assert!(
        turn["connections_timed_out"].as_u64().unwrap()
            + turn["connections_refused"].as_u64().unwrap()
            >= 200,
        "{turn}"
    );
    let back = common::wait_until(5, || open_fds() <= fds_before).await;
    println!("descriptors: {fds_before} before, {} after", open_fds());
    assert!(back, "descriptors back to {fds_before}: {}", open_fds());
    let rss_after = rss_kib();
    println!("resident memory: {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "201 closed connections left no more than 16 MiB behind: {rss_before} -> {rss_after} KiB"
    );
}

/// CPU time (user + system) of this process, which runs the server under test, in
/// clock ticks.
fn process_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_turn_server_with_udp_only_does_not_spin() {
    // Without TCP/TLS listeners the service's stream channel is closed from the start;
    // it was once polled in a loop (a core busy for nothing).
    let _server = start_server_with(|c| c.turn.udp_port = Some(0)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = process_cpu_ticks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = process_cpu_ticks() - before;
    println!("CPU while idle for 2 s: {used} ticks (a busy core would be about 200)");
    assert!(used < 100, "the idle server used {used} ticks in 2 s");
}

/// The reply to `request` sent from `socket` to `server` (2 s at most).
async fn exchange(
    socket: &tokio::net::UdpSocket,
    server: SocketAddr,
    request: &[u8],
) -> Option<Vec<u8>> {
    socket.send_to(request, server).await.ok()?;
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(buf[..n].to_vec())
}

/// The error code of a STUN response, `None` for a success.
fn error_code(reply: &[u8]) -> Option<u16> {
    use turn_server_proto::types::stun::attribute::ErrorCode;
    use turn_server_proto::types::stun::message::Message;
    let msg = Message::from_bytes(reply).expect("a STUN response");
    msg.attribute::<ErrorCode>().ok().map(|e| e.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_allocate_from_another_address_is_refused() {
    use switchyard_synthetic::link::{build_request, TurnServer};
    use turn_server_proto::types::message::ALLOCATE;
    use turn_server_proto::types::stun::attribute::{Nonce, Realm};
    use turn_server_proto::types::stun::message::Message;

    let server = turn_server(false).await;
    let (_ws, ice) = join(&server, "Eve").await;
    let turn_addr: SocketAddr = format!("127.0.0.1:{}", port_of(&ice, "turn:", "udp"))
        .parse()
        .unwrap();
    let creds = TurnServer {
        addr: turn_addr,
        username: ice["username"].as_str().unwrap().into(),
        password: ice["credential"].as_str().unwrap().into(),
    };
    let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // A challenge, then a signed Allocate from A: allocated.
    let (_, first) = build_request(ALLOCATE, |_| Ok(()), None).unwrap();
    let challenge = exchange(&a, turn_addr, &first).await.expect("a challenge");
    assert_eq!(error_code(&challenge), Some(401));
    let msg = Message::from_bytes(&challenge).unwrap();
    let realm = msg.attribute::<Realm>().unwrap().realm().to_string();
    let nonce = msg.attribute::<Nonce>().unwrap().nonce().to_string();
    let (_, signed) = build_request(ALLOCATE, |_| Ok(()), Some((&creds, &realm, &nonce))).unwrap();
    let granted = exchange(&a, turn_addr, &signed).await.expect("an answer");
    assert_eq!(error_code(&granted), None, "the signed Allocate is granted");

    // The same bytes (nonce, integrity and all) replayed from B: refused, no allocation.
    let replayed = exchange(&b, turn_addr, &signed)
        .await
        .expect("an answer to the replay");
    let code = error_code(&replayed);
    println!("a replay from another address is answered {code:?}");
    assert!(matches!(code, Some(401) | Some(438)), "refused: {code:?}");
    let turn = turn_stats(&server).await;
    assert_eq!(turn["allocations"].as_u64(), Some(1), "{turn}");
}

/// This process's resident memory (it runs the server under test), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
