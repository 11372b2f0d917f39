//! A webhook receiver for the tests: it listens on 127.0.0.1:0 (plain http, or https
//! with a certificate from a test CA), checks each POST's signature against a secret
//! and keeps the events.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What a receiver got: (event JSON, whether its signature checked out).
pub type Received = Arc<Mutex<Vec<(Value, bool)>>>;

/// A receiver on 127.0.0.1:0 that checks each POST's signature and answers 200.
pub async fn receiver(secret: &'static str) -> (String, Received) {
    receiver_with(secret, None).await
}

/// The same over TLS: `https://127.0.0.1:PORT/hooks` with `tls`'s certificate.
pub async fn receiver_with(secret: &'static str, tls: Option<TlsAcceptor>) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/hooks", listener.local_addr().unwrap());
    let got: Received = Arc::default();
    let sink = got.clone();
    tokio::spawn(async move {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        for _ in 0..10_000 {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let got = match &tls {
                None => one_post(s, &key).await,
                Some(tls) => match tls.accept(s).await {
                    Ok(s) => one_post(s, &key).await,
                    Err(e) => {
                        eprintln!("receiver: TLS handshake failed: {e}");
                        None
                    }
                },
            };
            if let Some(got) = got {
                sink.lock().unwrap().push(got);
            }
        }
    });
    (url, got)
}

/// Reads one POST, answers 200: its JSON body and whether its signature checked out.
async fn one_post<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    key: &ring::hmac::Key,
) -> Option<(Value, bool)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read the head, then as much body as Content-Length says.
    let (head, body) = loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break (String::new(), Vec::new());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < at + 4 + len {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            break (head, buf[at + 4..].to_vec());
        }
    };
    let signature = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Switchyard-Signature: "))
        .unwrap_or("")
        .to_string();
    let ok = signature == switchyard::webhook::sign(key, &body);
    let _ = s
        .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        .await;
    let _ = s.shutdown().await;
    serde_json::from_slice::<Value>(&body).ok().map(|v| (v, ok))
}

/// The event names received for `room`, in order.
pub fn events_of(got: &Received, room: &str) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(v, _)| v["room"] == room)
        .map(|(v, _)| v["event"].as_str().unwrap_or("?").to_string())
        .collect()
}
