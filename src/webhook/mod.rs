//! Webhooks: room started/finished, participant joined/left, track published/unpublished,
//! POSTed as JSON to the configured URLs (https, or http to loopback), signed with the
//! webhook secret: its own, never an API secret, so a receiver cannot mint tokens.
//!
//! The media shards only `emit` (a `try_send` into a bounded queue: a full queue drops
//! the event and counts it, so a slow or dead receiver never blocks a room). A delivery
//! task per room sends its events in order, each to every URL with retries and backoff
//! (deliver.rs).

mod deliver;
mod post;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::id::{MediaKind, ParticipantId, TrackId};
use crate::metrics::Metrics;
use crate::secret::Secret;

pub use deliver::{sign, SIGNATURE_HEADER};

/// Events waiting for the dispatcher, across all rooms.
const QUEUE: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RoomStarted,
    RoomFinished,
    ParticipantJoined,
    ParticipantLeft,
    TrackPublished,
    TrackUnpublished,
}

#[derive(Clone, Debug, Serialize)]
pub struct ParticipantRef {
    pub id: ParticipantId,
    pub name: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrackRef {
    pub track_id: TrackId,
    pub participant_id: ParticipantId,
    pub kind: MediaKind,
}

/// One event as it is POSTed (plus `id` and `created_at`, added on the way out).
#[derive(Clone, Debug, Serialize)]
pub struct WebhookEvent {
    pub event: EventKind,
    pub room: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<TrackRef>,
}

impl WebhookEvent {
    pub fn room(event: EventKind, room: &str) -> WebhookEvent {
        WebhookEvent {
            event,
            room: room.to_string(),
            participant: None,
            track: None,
        }
    }

    pub fn participant(event: EventKind, room: &str, id: ParticipantId, name: &str) -> Self {
        WebhookEvent {
            participant: Some(ParticipantRef {
                id,
                name: name.to_string(),
            }),
            ..WebhookEvent::room(event, room)
        }
    }

    /// A track event for the track `info` describes.
    pub fn for_track(event: EventKind, room: &str, info: &crate::room::TrackInfo) -> Self {
        WebhookEvent::track(
            event,
            room,
            TrackRef {
                track_id: info.track_id,
                participant_id: info.participant_id,
                kind: info.kind,
            },
        )
    }

    pub fn track(event: EventKind, room: &str, track: TrackRef) -> Self {
        WebhookEvent {
            track: Some(track),
            ..WebhookEvent::room(event, room)
        }
    }
}

/// Where the shards put events: nowhere when no URL is configured.
#[derive(Clone, Debug, Default)]
pub struct WebhookSink {
    queue: Option<mpsc::Sender<WebhookEvent>>,
    metrics: Arc<Metrics>,
}

impl WebhookSink {
    /// Never waits: a full queue drops the event (counted in `webhooks_dropped`).
    pub fn emit(&self, event: WebhookEvent) {
        if let Some(q) = &self.queue {
            if q.try_send(event).is_err() {
                Metrics::inc(&self.metrics.webhooks_dropped);
            }
        }
    }
}

/// Starts delivering to `urls` (on the current tokio runtime), signing with `signing`
/// when there is one. Fails only on an unreadable `ca_file`.
pub fn start(
    urls: Vec<String>,
    signing: Option<Secret>,
    ca_file: Option<PathBuf>,
    metrics: Arc<Metrics>,
) -> std::io::Result<WebhookSink> {
    if urls.is_empty() {
        return Ok(WebhookSink {
            queue: None,
            metrics,
        });
    }
    let tls = post::tls_connector(ca_file.as_deref())?;
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(deliver::dispatch(rx, urls, signing, tls, metrics.clone()));
    Ok(WebhookSink {
        queue: Some(tx),
        metrics,
    })
}

/// Whether `url` is one we POST to: `https://host[:port]/path`, or plain http to a
/// loopback receiver.
pub fn valid_url(url: &str) -> bool {
    post::Target::parse(url).is_some()
}
