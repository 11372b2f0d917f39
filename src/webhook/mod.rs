//! Webhooks: room started/finished, participant joined/left, track published/unpublished,
//! POSTed as JSON to the configured URLs, signed with the first API key's secret.
//!
//! The media shards only `emit` (a `try_send` into a bounded queue: a full queue drops
//! the event and counts it, so a slow or dead receiver never blocks a room). A delivery
//! task per room sends its events in order, each to every URL with retries and backoff
//! (deliver.rs).

mod deliver;

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::id::{MediaKind, ParticipantId, TrackId};
use crate::metrics::Metrics;

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
/// (API key, secret) when there is one.
pub fn start(
    urls: Vec<String>,
    signing: Option<(String, String)>,
    metrics: Arc<Metrics>,
) -> WebhookSink {
    if urls.is_empty() {
        return WebhookSink {
            queue: None,
            metrics,
        };
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(deliver::dispatch(rx, urls, signing, metrics.clone()));
    WebhookSink {
        queue: Some(tx),
        metrics,
    }
}

/// Whether `url` is one we can POST to: `http://host:port/path` (no TLS client here;
/// put a relay in front for https receivers).
pub fn valid_url(url: &str) -> bool {
    deliver::split_url(url).is_some()
}
