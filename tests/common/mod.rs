//! Test harness: a real Switchyard server on 127.0.0.1:0 and headless webrtc-rs
//! participants that join through the real signaling API, publish synthetic VP8 video
//! and Opus audio over real DTLS-SRTP, and count what they receive.
#![allow(dead_code)]

pub mod client;
pub mod hooks;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchyard::config::Config;
use switchyard::server::Server;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct TestServer {
    pub http: String,
    pub ws: String,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn start_server() -> TestServer {
    start_server_with(|_| {}).await
}

/// A server on 127.0.0.1:0 (media on any port), with `adjust` applied to its config.
pub async fn start_server_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,stun_proto=off,turn_server_proto=off")
            }),
        )
        .with_test_writer()
        .try_init();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.media.udp_port = 0;
    adjust(&mut config);
    let server = Server::bind(config).await.expect("bind 127.0.0.1:0");
    let addr = server.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = rx.await;
    }));
    TestServer {
        http: format!("http://{addr}"),
        ws: format!("ws://{addr}/ws"),
        shutdown: Some(tx),
    }
}

/// A test CA and a certificate it signed for `names` (IP addresses or host names).
pub struct TestPki {
    pub ca_pem: String,
    pub cert: rcgen::Certificate,
    pub key: rcgen::KeyPair,
}

pub fn test_pki(names: &[&str]) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        cert,
        key,
    }
}

/// An access token signed with the API key pair `key`:`secret`, for `identity` as a
/// member of `room` (ten minutes).
pub fn member_token(key: &str, secret: &str, identity: &str, room: &str) -> String {
    use switchyard::auth::{claims_for, Grants, KeySet};
    let grants = Grants {
        room: Some(room.into()),
        ..Grants::default()
    };
    let claims = claims_for(key, identity, None, Duration::from_secs(600), grants);
    KeySet::new(&[(key.into(), secret.into())])
        .issue(key, &claims)
        .unwrap()
}

/// The `Authorization` value for an API key pair (the admin API takes it as HTTP Basic).
pub fn basic_auth(key: &str, secret: &str) -> String {
    use base64::Engine;
    let pair = format!("{key}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

pub async fn http_get_json(url: &str) -> Value {
    switchyard_synthetic::http::get_json(url)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A bare signaling connection for bad-input tests.
pub struct RawWs {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawWs {
    pub async fn connect(url: &str) -> RawWs {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        RawWs { ws }
    }

    /// A connection whose socket takes in at most about `bytes` at a time: a slow
    /// reader's, so the server's writes back up as soon as it stops reading.
    pub async fn connect_with_receive_buffer(url: &str, bytes: u32) -> RawWs {
        let addr: std::net::SocketAddr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        let stream = socket.connect(addr).await.expect("tcp connect");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("ws handshake");
        RawWs { ws }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("ws send");
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    /// Waits for the next message of `type` (others are skipped), at most `secs`.
    pub async fn expect_type(&mut self, kind: &str, secs: u64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {kind:?} message within {secs} s"));
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server sends JSON");
                    if v["type"] == kind {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended while waiting for {kind:?}: {other:?}"),
            }
        }
    }

    /// The next JSON message of any type, at most `secs`.
    pub async fn next_json(&mut self, secs: u64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no message within {secs} s"));
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str()).expect("server sends JSON")
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    }

    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.expect_type("error", 5).await;
        assert_eq!(v["code"], code, "error was {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error has a human message: {v}"
        );
        v
    }

    /// The code of the close frame the server sent within `secs` (skipping other
    /// messages): `None` when it sent none (the client sees 1006) or did not close.
    pub async fn close_code_within(&mut self, secs: u64) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Err(_) | Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// True when the server closed the socket within `secs`.
    pub async fn closed_within(&mut self, secs: u64) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// Polls `cond` every 100 ms until it holds or `secs` pass.
pub async fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 10 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

/// Descriptors this process holds (the server under test shares it).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Whether the server closed `s` within `secs`: a read returns end-of-file or an error
/// (whatever it answered first is read past).
pub async fn closed_within(s: &mut TcpStream, secs: u64) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}
