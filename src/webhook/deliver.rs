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
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use super::post::{post, Target};
use super::WebhookEvent;
use crate::metrics::Metrics;
use crate::secret::Secret;

/// The header that carries `sha256=<hex HMAC-SHA256 of the body with the webhook secret>`.
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
    signing: Option<hmac::Key>,
    tls: TlsConnector,
    metrics: Arc<Metrics>,
}

pub(super) async fn dispatch(
    mut events: mpsc::Receiver<WebhookEvent>,
    urls: Vec<String>,
    signing: Option<Secret>,
    tls: TlsConnector,
    metrics: Arc<Metrics>,
) {
    let delivery = Arc::new(Delivery {
        signing: signing
            .map(|secret| hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes())),
        tls,
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
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post_signed(url, body, delivery)).await {
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

async fn post_signed(url: &str, body: &str, delivery: &Delivery) -> std::io::Result<u16> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a webhook URL");
    let target = Target::parse(url).ok_or_else(bad)?;
    let headers = match &delivery.signing {
        Some(key) => format!("{SIGNATURE_HEADER}: {}\r\n", sign(key, body.as_bytes())),
        None => String::new(),
    };
    post(&target, &headers, body, &delivery.tls).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
