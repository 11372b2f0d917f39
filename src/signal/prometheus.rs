//! `GET /metrics`: what /api/stats reports, in the Prometheus (OpenMetrics) text format,
//! written with prometheus-client. The registry is built fresh on each scrape from the
//! process-wide counters and one look at each shard, so the media path keeps its plain
//! atomics and pays nothing for Prometheus. docs/metrics.md lists every series.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::AppState;
use crate::engine::{RoomSummary, ShardInfo};
use crate::metrics::MetricsSnapshot;

/// Per-room series are written for at most this many rooms (the largest): label values
/// are what Prometheus stores per series, and room names come from clients.
pub const MAX_ROOM_SERIES: usize = 50;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn metrics(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    // The metrics token (Prometheus: `authorization: {credentials: TOKEN}`) reads this
    // route and no other; without one, scrapes authenticate like the admin API
    // (docs/metrics.md).
    let by_token =
        app.config.metrics_token.as_ref().is_some_and(|token| {
            bearer(&headers).is_some_and(|presented| token.matches(presented))
        });
    if !by_token {
        if let Err(e) = super::admin::authorize(&app, &headers, None) {
            return e.into_response();
        }
    }
    let snapshot = app.engine.metrics.snapshot();
    let rooms = app.engine.rooms().await;
    let shards = app.engine.inspect().await;
    let body = render(&snapshot, &rooms, &shards);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cause {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Node {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Room {
    room: String,
}

/// A counter already holding `value`.
fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// A counter family labelled `outcome`, each already holding its value.
fn outcomes(registry: &mut Registry, name: &str, help: &str, values: &[(&'static str, u64)]) {
    let family = Family::<Outcome, Counter>::default();
    for &(outcome, n) in values {
        family.get_or_create(&Outcome { outcome }).inc_by(n);
    }
    registry.register(name, help, family);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn float_gauge(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: f64) {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(value);
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, g),
        None => registry.register(name, help, g),
    }
}

/// The embedded TURN server's series (turn/counters.rs).
fn turn(r: &mut Registry, t: &crate::turn::TurnSnapshot) {
    counter(
        r,
        "turn_allocations",
        "TURN allocations made",
        t.allocations,
    );
    gauge(
        r,
        "turn_allocations_held",
        "TURN allocations held now",
        t.allocations_now as i64,
    );
    let refused = Family::<Cause, Counter>::default();
    for (cause, n) in [
        ("credential", t.refused_credential),
        ("participant_quota", t.refused_participant_quota),
        ("total_quota", t.refused_total_quota),
        ("forbidden_peer", t.refused_forbidden_peer),
        ("tcp_relay", t.refused_tcp_relay),
        ("error_response", t.error_responses),
    ] {
        refused.get_or_create(&Cause { cause }).inc_by(n);
    }
    r.register(
        "turn_refused",
        "TURN requests refused: credentials expired, unknown or of a departed participant, quotas, peers not ours, TCP relays, and the library's error responses (bad credentials, stale nonce)",
        refused,
    );
    let bytes = Family::<Kind, Counter>::default();
    for (kind, n) in [
        ("to_peers", t.relayed_bytes_to_peers),
        ("to_clients", t.relayed_bytes_to_clients),
    ] {
        bytes.get_or_create(&Kind { kind }).inc_by(n);
    }
    r.register_with_unit(
        "turn_relayed",
        "Bytes relayed by the embedded TURN server",
        Unit::Bytes,
        bytes,
    );
    counter(
        r,
        "turn_dropped",
        "TURN datagrams and frames dropped (full queue, refused send)",
        t.dropped,
    );
    outcomes(
        r,
        "turn_connections",
        "TURN TCP/TLS connections accepted, refused (cap, TLS), closed by a deadline or a bad frame",
        &[
            ("accepted", t.connections_accepted),
            ("refused", t.connections_refused),
            ("timed_out", t.connections_timed_out),
            ("bad_frame", t.frames_refused),
        ],
    );
}

/// The text a scrape returns.
pub fn render(m: &MetricsSnapshot, rooms: &[RoomSummary], shards: &[ShardInfo]) -> String {
    let mut r = Registry::with_prefix("switchyard");

    // What is going on now.
    let participants: usize = rooms.iter().map(|room| room.participants.len()).sum();
    gauge(&mut r, "rooms", "Open rooms", rooms.len() as i64);
    gauge(
        &mut r,
        "participants",
        "Participants in all rooms",
        participants as i64,
    );
    let tracks = Family::<Kind, Gauge>::default();
    let publications: usize = shards.iter().map(|s| s.publications.len()).sum();
    let simulcast = shards
        .iter()
        .flat_map(|s| &s.publications)
        .filter(|p| p.layers.len() > 1)
        .count();
    tracks
        .get_or_create(&Kind { kind: "all" })
        .set(publications as i64);
    tracks
        .get_or_create(&Kind { kind: "simulcast" })
        .set(simulcast as i64);
    r.register("published_tracks", "Tracks being published", tracks);
    let mut by_size: Vec<&RoomSummary> = rooms.iter().collect();
    by_size.sort_by_key(|room| std::cmp::Reverse(room.participants.len()));
    let per_room = Family::<Room, Gauge>::default();
    for room in by_size.into_iter().take(MAX_ROOM_SERIES) {
        per_room
            .get_or_create(&Room {
                room: room.name.clone(),
            })
            .set(room.participants.len() as i64);
    }
    r.register(
        "room_participants",
        "Participants per room (the largest rooms only, see MAX_ROOM_SERIES)",
        per_room,
    );

    // Media in and out.
    counter(
        &mut r,
        "rtp_received_packets",
        "RTP packets received from publishers",
        m.rtp_in,
    );
    counter(
        &mut r,
        "rtp_forwarded_packets",
        "RTP packets forwarded to subscribers",
        m.rtp_forwarded,
    );
    counter(
        &mut r,
        "rtp_forwarded_bytes",
        "Bytes of the forwarded RTP packets",
        m.rtp_forwarded_bytes,
    );
    counter(
        &mut r,
        "udp_received_datagrams",
        "UDP datagrams received on the media ports",
        m.udp_datagrams_in,
    );
    counter(
        &mut r,
        "udp_sent_datagrams",
        "UDP datagrams sent from the media ports",
        m.udp_datagrams_out,
    );
    counter(
        &mut r,
        "udp_received_bytes",
        "UDP payload bytes received on the media ports",
        m.udp_bytes_in,
    );
    counter(
        &mut r,
        "udp_sent_bytes",
        "UDP payload bytes sent from the media ports",
        m.udp_bytes_out,
    );
    let drops = Family::<Cause, Counter>::default();
    for (cause, n) in [
        ("unknown_ufrag", m.udp_unknown_ufrag),
        ("unknown_address", m.udp_unknown_address),
        ("not_media", m.udp_garbage),
        ("foreign_source", m.udp_foreign_source),
        ("undecryptable", m.rtc_read_errors),
        ("udp_send_error", m.udp_send_errors),
        ("udp_receive_error", m.udp_recv_errors),
    ] {
        drops.get_or_create(&Cause { cause }).inc_by(n);
    }
    r.register("dropped_packets", "Datagrams dropped, by cause", drops);
    let mut rooms_rtp = crate::room::RoomRtpCounts::default();
    for shard in shards {
        rooms_rtp.add(&shard.rtp);
    }
    let rtp_drops = Family::<Cause, Counter>::default();
    for (cause, n) in crate::metrics::rtp_drops(m, &rooms_rtp) {
        rtp_drops.get_or_create(&Cause { cause }).inc_by(n);
    }
    r.register(
        "rtp_dropped_packets",
        "Publishers' RTP packets not forwarded, by cause (per leg for the leg causes)",
        rtp_drops,
    );

    // Feedback.
    counter(
        &mut r,
        "keyframe_requests_received",
        "PLI and FIR from subscribers",
        m.keyframe_requests_from_subscribers,
    );
    counter(
        &mut r,
        "keyframe_requests_sent",
        "Keyframe requests sent to publishers (after throttling)",
        m.keyframe_requests_to_publishers,
    );
    counter(
        &mut r,
        "retransmissions",
        "NACKed packets resent to subscribers",
        m.retransmissions_out,
    );
    counter(
        &mut r,
        "retransmissions_suppressed",
        "NACKed packets not resent (resent moments ago, or over the resend budget)",
        m.retransmissions_suppressed,
    );
    counter(
        &mut r,
        "retransmissions_over_budget",
        "NACKed packets not resent because the connection's resend budget was spent",
        m.retransmissions_over_budget,
    );
    counter(
        &mut r,
        "ws_join_timeouts",
        "WebSockets closed for sending no join within the join timeout",
        m.ws_join_timeouts,
    );
    counter(
        &mut r,
        "ws_write_timeouts",
        "WebSockets closed because the client did not take a write within the write timeout",
        m.ws_write_timeouts,
    );
    counter(
        &mut r,
        "offers_refused",
        "Client offers refused (bad SDP, more sent tracks than allowed)",
        m.offers_refused,
    );
    counter(
        &mut r,
        "candidates_refused",
        "ICE candidates refused (malformed, over the per-description cap)",
        m.candidates_refused,
    );
    counter(
        &mut r,
        "ice_connect_timeouts",
        "Participants removed because their media connection never connected",
        m.ice_connect_timeouts,
    );
    outcomes(
        &mut r,
        "ice_tcp_connections",
        "ICE-TCP connections accepted, and refused (over the cap, not STUN of ours, too slow)",
        &[
            ("accepted", m.tcp_connections_accepted),
            ("refused", m.tcp_connections_refused),
        ],
    );
    outcomes(
        &mut r,
        "ice_tcp_frames",
        "ICE-TCP frames received and sent, and dropped for a connection too far behind",
        &[
            ("received", m.tcp_frames_in),
            ("sent", m.tcp_frames_out),
            ("dropped", m.tcp_frames_dropped),
        ],
    );
    counter(
        &mut r,
        "notifications_dropped",
        "Room notifications not queued for a participant whose signaling fell behind",
        m.notifications_dropped,
    );
    counter(
        &mut r,
        "resyncs_sent",
        "Resyncs (the room as it is now) sent to participants whose notifications were dropped",
        m.resyncs_sent,
    );
    counter(
        &mut r,
        "http_header_timeouts",
        "HTTP connections closed for not sending a request's headers within the header timeout",
        m.http_header_timeouts,
    );
    counter(
        &mut r,
        "http_connections_refused",
        "HTTP connections refused: the address already held the most allowed",
        m.http_connections_refused,
    );
    counter(
        &mut r,
        "http_accept_errors",
        "Accepts of the HTTP listener that failed (out of descriptors, aborted handshakes)",
        m.http_accept_errors,
    );
    counter(
        &mut r,
        "ws_liveness_timeouts",
        "Participants removed after silence past the liveness timeout",
        m.ws_liveness_timeouts,
    );
    counter(
        &mut r,
        "rtp_replayed_after_keyframe",
        "Packets forwarded after a late keyframe start switched a leg (held while it waited)",
        m.rtp_replayed_after_keyframe,
    );
    counter(
        &mut r,
        "chat_messages",
        "Chat messages relayed",
        m.chat_messages,
    );
    counter(
        &mut r,
        "chat_refused",
        "Chat messages refused (too long, too fast, not text)",
        m.chat_refused,
    );
    counter(
        &mut r,
        "chat_dropped",
        "Chat message copies not sent: the receiver's data channel was too far behind",
        m.chat_dropped,
    );
    counter(
        &mut r,
        "transport_feedbacks",
        "transport-cc feedback packets from subscribers",
        m.twcc_feedback_in,
    );
    counter(
        &mut r,
        "probe_clusters",
        "Bandwidth probes started",
        m.probe_clusters,
    );
    counter(
        &mut r,
        "padding_packets",
        "Padding packets sent by probes",
        m.padding_packets_out,
    );
    counter(
        &mut r,
        "dynacast_updates",
        "Layer on/off messages sent to publishers",
        m.dynacast_updates,
    );

    let hooks = Family::<Outcome, Counter>::default();
    for (outcome, n) in [
        ("sent", m.webhooks_sent),
        ("failed", m.webhooks_failed),
        ("dropped", m.webhooks_dropped),
    ] {
        hooks.get_or_create(&Outcome { outcome }).inc_by(n);
    }
    r.register("webhooks", "Webhook deliveries by outcome", hooks);

    // Downlinks: loss as subscribers report it, and how many are held below what they want.
    let downlinks: Vec<_> = shards.iter().flat_map(|s| &s.downlinks).collect();
    let estimated: Vec<_> = downlinks
        .iter()
        .filter(|d| d.estimate_bps.is_some())
        .collect();
    let mean_loss = if estimated.is_empty() {
        0.0
    } else {
        estimated.iter().map(|d| d.loss).sum::<f64>() / estimated.len() as f64
    };
    let max_loss = estimated.iter().map(|d| d.loss).fold(0.0, f64::max);
    float_gauge(
        &mut r,
        "downlink_loss_ratio_mean",
        "Mean reported loss over subscribers",
        None,
        mean_loss,
    );
    float_gauge(
        &mut r,
        "downlink_loss_ratio_max",
        "Highest reported loss of any subscriber",
        None,
        max_loss,
    );
    let limited = downlinks
        .iter()
        .filter(|d| d.allocated_bps < d.wanted_bps)
        .count();
    gauge(
        &mut r,
        "downlinks_limited",
        "Subscribers whose estimate holds them below the layers their tiles want",
        limited as i64,
    );

    // The process.
    if let Some(cpu) = m.process_cpu_seconds {
        let c = Counter::<f64, AtomicU64>::default();
        c.inc_by(cpu);
        r.register_with_unit(
            "process_cpu",
            "CPU time used (user + system)",
            Unit::Seconds,
            c,
        );
    }
    if let Some(rss) = m.process_rss_mb {
        float_gauge(
            &mut r,
            "process_resident_memory",
            "Resident memory",
            Some(Unit::Bytes),
            rss * 1024.0 * 1024.0,
        );
    }
    if let Some(t) = &m.turn {
        turn(&mut r, t);
    }
    if let Some(node) = &m.node {
        // An info series: join it on `instance` to label any other series by node.
        let info = Family::<Node, Gauge>::default();
        info.get_or_create(&Node { node: node.clone() }).set(1);
        r.register(
            "node_info",
            "This node's id in the cluster (always 1)",
            info,
        );
    }
    outcomes(
        &mut r,
        "cluster_events",
        "Cluster: joins moved to the room's node, joins refused (store unreachable, every node full), failed heartbeats, rooms closed because another node took their lease, requests answered by another node or not, participants moved away by a drain",
        &[
            ("moved", m.cluster_moved),
            ("refused", m.cluster_refused),
            ("store_error", m.cluster_store_errors),
            ("lease_lost", m.cluster_leases_lost),
            ("forwarded", m.cluster_forwarded),
            ("forward_failed", m.cluster_forward_failed),
            ("drained", m.cluster_drained),
        ],
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ParticipantId;
    use crate::metrics::Metrics;
    use crate::room::ParticipantInfo;

    fn room(name: &str, people: usize) -> RoomSummary {
        RoomSummary {
            name: name.into(),
            participants: (0..people)
                .map(|i| ParticipantInfo::new(ParticipantId(i as u64), format!("p{i}")))
                .collect(),
        }
    }

    #[test]
    fn renders_counters_gauges_and_bounded_room_labels() {
        let metrics = Metrics::default();
        Metrics::add(&metrics.rtp_forwarded, 1234);
        Metrics::add(&metrics.udp_garbage, 5);
        let rooms: Vec<RoomSummary> = (0..MAX_ROOM_SERIES + 20)
            .map(|i| room(&format!("r{i}"), 1 + i % 7))
            .collect();
        let text = render(&metrics.snapshot(), &rooms, &[]);
        assert!(
            text.contains("switchyard_rtp_forwarded_packets_total 1234"),
            "{text}"
        );
        assert!(text.contains("switchyard_dropped_packets_total{cause=\"not_media\"} 5"));
        assert!(text.contains(&format!("switchyard_rooms {}", MAX_ROOM_SERIES + 20)));
        let room_series = text
            .lines()
            .filter(|l| l.starts_with("switchyard_room_participants{"))
            .count();
        assert_eq!(room_series, MAX_ROOM_SERIES, "bounded");
        assert!(text.ends_with("# EOF\n"));
        assert!(
            !text.contains("switchyard_node_info"),
            "no node label on a single node"
        );
        let _ = metrics.node.set("b".into());
        let text = render(&metrics.snapshot(), &rooms, &[]);
        assert!(
            text.contains("switchyard_node_info{node=\"b\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn room_names_are_escaped_in_labels() {
        let text = render(
            &Metrics::default().snapshot(),
            &[room("a\"b\\c\nd", 2)],
            &[],
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("switchyard_room_participants{"))
            .unwrap();
        assert_eq!(line, r#"switchyard_room_participants{room="a\"b\\c\nd"} 2"#);
    }
}
