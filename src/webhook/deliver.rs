//! Delivering webhooks: one task takes events off the shards' queue and hands each to a
//! delivery task per (room, receiver), which POSTs them one after another, retrying
//! with backoff: a room's events reach each receiver in order, and a dead receiver
//! delays nobody else. Each such queue is bounded too; what does not fit is dropped and
//! counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use ring::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::WebhookEvent;
use crate::metrics::Metrics;

/// The header that carries `sha256=<hex HMAC-SHA256 of the body with the API secret>`.
pub const SIGNATURE_HEADER: &str = "X-Switchyard-Signature";
/// Events one room may have waiting.
const ROOM_QUEUE: usize = 256;
/// Waits before the retries of one POST (four attempts in all).
const BACKOFF: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];
/// One attempt: connect, send, read the status line.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// A room's delivery task ends after this long with nothing to send.
const IDLE: Duration = Duration::from_secs(30);

static NEXT_EVENT: AtomicU64 = AtomicU64::new(1);

struct Delivery {
    signing: Option<(String, hmac::Key)>,
    metrics: Arc<Metrics>,
}

pub(super) async fn dispatch(
    mut events: mpsc::Receiver<WebhookEvent>,
    urls: Vec<String>,
    signing: Option<(String, String)>,
    metrics: Arc<Metrics>,
) {
    let delivery = Arc::new(Delivery {
        signing: signing
            .map(|(key, secret)| (key, hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))),
        metrics: metrics.clone(),
    });
    // (room, receiver) -> its delivery task's queue.
    let mut queues: HashMap<(String, usize), mpsc::Sender<Arc<String>>> = HashMap::new();
    while let Some(event) = events.recv().await {
        // One body for every receiver: the same id, the same signature.
        let body = Arc::new(envelope(&event));
        for (index, url) in urls.iter().enumerate() {
            let key = (event.room.clone(), index);
            let mut body = Some(body.clone());
            // Twice at most: a task that just ended (idle) is replaced once.
            for _ in 0..2 {
                let Some(b) = body.take() else { break };
                let tx = queues.entry(key.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(ROOM_QUEUE);
                    tokio::spawn(deliver_in_order(rx, url.clone(), delivery.clone()));
                    tx
                });
                match tx.try_send(b) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        Metrics::inc(&metrics.webhooks_dropped)
                    }
                    Err(mpsc::error::TrySendError::Closed(b)) => {
                        queues.remove(&key);
                        body = Some(b);
                    }
                }
            }
        }
        queues.retain(|_, tx| !tx.is_closed());
    }
}

async fn deliver_in_order(
    mut bodies: mpsc::Receiver<Arc<String>>,
    url: String,
    delivery: Arc<Delivery>,
) {
    while let Ok(Some(body)) = tokio::time::timeout(IDLE, bodies.recv()).await {
        deliver_one(&url, &body, &delivery).await;
    }
}

/// The JSON POSTed: the event, with a unique id and the time it is sent.
fn envelope(event: &WebhookEvent) -> String {
    let mut v = serde_json::to_value(event).unwrap_or_default();
    v["id"] = format!("ev{}", NEXT_EVENT.fetch_add(1, Relaxed)).into();
    v["created_at"] = crate::auth::unix_now().into();
    v.to_string()
}

/// `sha256=<hex>` of `body` under `key`.
pub fn sign(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

async fn deliver_one(url: &str, body: &str, delivery: &Delivery) {
    for attempt in 0..=BACKOFF.len() {
        if attempt > 0 {
            tokio::time::sleep(BACKOFF[attempt - 1]).await;
        }
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(url, body, delivery)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                Metrics::inc(&delivery.metrics.webhooks_sent);
                return;
            }
            Ok(Ok(status)) => debug!(url, status, attempt, "webhook refused"),
            Ok(Err(e)) => debug!(url, attempt, "webhook failed: {e}"),
            Err(_) => debug!(url, attempt, "webhook timed out"),
        }
    }
    Metrics::inc(&delivery.metrics.webhooks_failed);
    warn!(
        url,
        "webhook not delivered after {} attempts",
        BACKOFF.len() + 1
    );
}

/// `http://host:port/path` -> (`host:port`, `/path`).
pub(super) fn split_url(url: &str) -> Option<(&str, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, "/".to_string()),
    };
    let (name, port) = host.rsplit_once(':')?;
    (!name.is_empty() && port.parse::<u16>().is_ok() && !path.contains(['\r', '\n', ' ']))
        .then_some((host, path))
}

async fn post(url: &str, body: &str, delivery: &Delivery) -> std::io::Result<u16> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an http:// URL");
    let (host, path) = split_url(url).ok_or_else(bad)?;
    let mut headers = String::new();
    if let Some((key_id, key)) = &delivery.signing {
        headers.push_str(&format!(
            "{SIGNATURE_HEADER}: {}\r\nX-Switchyard-Key: {key_id}\r\n",
            sign(key, body.as_bytes())
        ));
    }
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(host).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    // The status line is all we need.
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_with_a_port() {
        assert_eq!(
            split_url("http://127.0.0.1:9000/hooks"),
            Some(("127.0.0.1:9000", "/hooks".to_string()))
        );
        assert_eq!(
            split_url("http://127.0.0.1:9000"),
            Some(("127.0.0.1:9000", "/".into()))
        );
        for bad in [
            "https://x:1/",
            "http://x/",
            "http://:80/",
            "ftp://x:1",
            "http://x:1/a b",
        ] {
            assert_eq!(split_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231 test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            sign(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
