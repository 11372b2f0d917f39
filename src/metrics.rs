//! Process-wide media counters. The media path counts instead of logging per packet;
//! `/api/stats` reports these.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Metrics {
    pub rtp_in: AtomicU64,
    /// Decrypted RTP of no published track (a late packet, an unrouted simulcast layer).
    pub rtp_in_unrouted: AtomicU64,
    pub rtp_forwarded: AtomicU64,
    /// Bytes of the forwarded packets (RTP header and payload).
    pub rtp_forwarded_bytes: AtomicU64,
    /// `write_rtp` errors on subscriber legs (leg not bound yet, connection gone).
    pub rtp_write_errors: AtomicU64,
    /// Dropped on the shard: RTP for a room that is gone; a forward for a leg (or its
    /// subscriber) closed in the same round. The rooms count the rest (RoomRtpCounts).
    pub rtp_dropped_no_room: AtomicU64,
    pub rtp_dropped_no_leg: AtomicU64,
    /// Dropped: for a subscriber whose connection has not finished DTLS yet.
    pub rtp_dropped_not_connected: AtomicU64,
    pub udp_datagrams_in: AtomicU64,
    pub udp_datagrams_out: AtomicU64,
    pub udp_bytes_in: AtomicU64,
    pub udp_bytes_out: AtomicU64,
    /// GSO sends (each carries several datagrams to one destination).
    pub udp_gso_sends: AtomicU64,
    /// `sendmmsg` calls (each carries single datagrams to many destinations).
    pub udp_mmsg_sends: AtomicU64,
    /// Sends the kernel refused (full buffer, unreachable): the datagrams are lost.
    pub udp_send_errors: AtomicU64,
    pub udp_recv_errors: AtomicU64,
    /// Dropped by the demux: STUN naming no connection of ours.
    pub udp_unknown_ufrag: AtomicU64,
    /// Dropped by the demux: DTLS/RTP from an address no connection uses.
    pub udp_unknown_address: AtomicU64,
    /// Dropped by the demux: neither STUN, DTLS nor RTP/RTCP.
    pub udp_garbage: AtomicU64,
    /// Dropped: a non-loopback source while the server serves loopback only.
    pub udp_foreign_source: AtomicU64,
    /// Datagrams a connection refused (bad integrity, undecryptable, malformed).
    pub rtc_read_errors: AtomicU64,
    /// Connection timers run (`handle_timeout` calls): the fixed per-connection cost.
    pub rtc_timeouts: AtomicU64,
    pub rtc_timeout_errors: AtomicU64,
    pub keyframe_requests_from_subscribers: AtomicU64,
    pub keyframe_requests_to_publishers: AtomicU64,
    pub twcc_feedback_in: AtomicU64,
    pub probe_clusters: AtomicU64,
    pub padding_packets_out: AtomicU64,
    pub dynacast_updates: AtomicU64,
    /// NACK resends sent, and those held back (the packet was resent moments ago).
    pub retransmissions_out: AtomicU64,
    pub retransmissions_suppressed: AtomicU64,
    /// Of those held back, the ones over the connection's resend budget (the rest were
    /// resent moments ago).
    pub retransmissions_over_budget: AtomicU64,
    /// Packets forwarded late on a leg that a late (resent) keyframe start switched:
    /// the rest of that picture, held while the leg waited (engine/held.rs).
    pub rtp_replayed_after_keyframe: AtomicU64,
    /// Chat messages relayed; refused (too long, too fast, not text); copies not sent
    /// to a participant whose data channel was too far behind.
    pub chat_messages: AtomicU64,
    pub chat_refused: AtomicU64,
    pub chat_dropped: AtomicU64,
    /// Webhook POSTs answered 2xx; events given up after every retry; events dropped
    /// because a queue was full.
    pub webhooks_sent: AtomicU64,
    pub webhooks_failed: AtomicU64,
    pub webhooks_dropped: AtomicU64,
    /// WebSockets closed for not sending `join` within the join timeout; for a write
    /// the client did not take within the write timeout; for silence (no message, no
    /// pong) past the liveness timeout.
    pub ws_join_timeouts: AtomicU64,
    pub ws_write_timeouts: AtomicU64,
    pub ws_liveness_timeouts: AtomicU64,
    /// Client offers refused (bad SDP, too many sent tracks) and candidates refused
    /// (malformed, over the per-description cap).
    pub offers_refused: AtomicU64,
    pub candidates_refused: AtomicU64,
    /// Participants removed because their media connection never connected.
    pub ice_connect_timeouts: AtomicU64,
    /// ICE-TCP: connections accepted; refused (over the cap, a first frame that is no
    /// STUN request of ours, none within the deadline); frames in and out; frames a
    /// connection too far behind (or gone) did not get.
    pub tcp_connections_accepted: AtomicU64,
    pub tcp_connections_refused: AtomicU64,
    pub tcp_frames_in: AtomicU64,
    pub tcp_frames_out: AtomicU64,
    pub tcp_frames_dropped: AtomicU64,
    /// Room notifications not queued for a participant whose signaling fell behind,
    /// and the resyncs (the room as it is now) sent to such participants instead.
    pub notifications_dropped: AtomicU64,
    pub resyncs_sent: AtomicU64,
    /// HTTP connections closed for not sending a request's headers in time; refused
    /// for holding too many connections from one address; accepts that failed (EMFILE).
    pub http_header_timeouts: AtomicU64,
    pub http_connections_refused: AtomicU64,
    pub http_accept_errors: AtomicU64,
    /// Gauges: participants and rooms on all shards, as of each shard's last
    /// housekeeping tick (20 ms). Each shard adds its own changes (wrapping adds of
    /// the difference), so `/healthz` reads them without a walk of the shards.
    pub participants_now: AtomicU64,
    pub rooms_now: AtomicU64,
    /// Cluster: joins answered `moved` (the room is on another node); joins refused
    /// because the store was unreachable; heartbeats that failed; rooms closed here
    /// because another node holds their lease now.
    pub cluster_moved: AtomicU64,
    pub cluster_refused: AtomicU64,
    pub cluster_store_errors: AtomicU64,
    pub cluster_leases_lost: AtomicU64,
    /// Requests answered by another node (admin calls, room lists) / not answered.
    pub cluster_forwarded: AtomicU64,
    pub cluster_forward_failed: AtomicU64,
    /// Participants told to move to another node because this one drains (SIGTERM).
    pub cluster_drained: AtomicU64,
    /// This node's id in a cluster (set once at start, with --redis).
    pub node: std::sync::OnceLock<String>,
    /// The embedded TURN server's counters, when one runs (set once at start).
    pub turn: std::sync::OnceLock<std::sync::Arc<crate::turn::TurnCounters>>,
}

#[derive(Debug, Serialize)]
pub struct MetricsSnapshot {
    pub rtp_in: u64,
    pub rtp_in_unrouted: u64,
    pub rtp_forwarded: u64,
    pub rtp_forwarded_bytes: u64,
    pub rtp_write_errors: u64,
    pub rtp_dropped_no_room: u64,
    pub rtp_dropped_no_leg: u64,
    pub rtp_dropped_not_connected: u64,
    pub udp_datagrams_in: u64,
    pub udp_datagrams_out: u64,
    pub udp_bytes_in: u64,
    pub udp_bytes_out: u64,
    pub udp_gso_sends: u64,
    pub udp_mmsg_sends: u64,
    pub udp_send_errors: u64,
    pub udp_recv_errors: u64,
    pub udp_unknown_ufrag: u64,
    pub udp_unknown_address: u64,
    pub udp_garbage: u64,
    pub udp_foreign_source: u64,
    pub rtc_read_errors: u64,
    pub rtc_timeouts: u64,
    pub rtc_timeout_errors: u64,
    pub keyframe_requests_from_subscribers: u64,
    pub keyframe_requests_to_publishers: u64,
    pub twcc_feedback_in: u64,
    pub probe_clusters: u64,
    pub padding_packets_out: u64,
    pub dynacast_updates: u64,
    pub retransmissions_out: u64,
    pub retransmissions_suppressed: u64,
    pub retransmissions_over_budget: u64,
    pub rtp_replayed_after_keyframe: u64,
    pub chat_messages: u64,
    pub chat_refused: u64,
    pub chat_dropped: u64,
    pub webhooks_sent: u64,
    pub webhooks_failed: u64,
    pub webhooks_dropped: u64,
    pub ws_join_timeouts: u64,
    pub ws_write_timeouts: u64,
    pub ws_liveness_timeouts: u64,
    pub offers_refused: u64,
    pub candidates_refused: u64,
    pub ice_connect_timeouts: u64,
    pub tcp_connections_accepted: u64,
    pub tcp_connections_refused: u64,
    pub tcp_frames_in: u64,
    pub tcp_frames_out: u64,
    pub tcp_frames_dropped: u64,
    pub notifications_dropped: u64,
    pub resyncs_sent: u64,
    pub http_header_timeouts: u64,
    pub http_connections_refused: u64,
    pub http_accept_errors: u64,
    pub cluster_moved: u64,
    pub cluster_refused: u64,
    pub cluster_store_errors: u64,
    pub cluster_leases_lost: u64,
    pub cluster_forwarded: u64,
    pub cluster_forward_failed: u64,
    pub cluster_drained: u64,
    /// CPU time (user + system) the server process has used, in seconds (Linux).
    pub process_cpu_seconds: Option<f64>,
    /// Resident memory now and at its peak, in MiB (Linux).
    pub process_rss_mb: Option<f64>,
    pub process_peak_rss_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<crate::turn::TurnSnapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            rtp_in: self.rtp_in.load(Relaxed),
            rtp_in_unrouted: self.rtp_in_unrouted.load(Relaxed),
            rtp_forwarded: self.rtp_forwarded.load(Relaxed),
            rtp_forwarded_bytes: self.rtp_forwarded_bytes.load(Relaxed),
            rtp_write_errors: self.rtp_write_errors.load(Relaxed),
            rtp_dropped_no_room: self.rtp_dropped_no_room.load(Relaxed),
            rtp_dropped_no_leg: self.rtp_dropped_no_leg.load(Relaxed),
            rtp_dropped_not_connected: self.rtp_dropped_not_connected.load(Relaxed),
            udp_datagrams_in: self.udp_datagrams_in.load(Relaxed),
            udp_datagrams_out: self.udp_datagrams_out.load(Relaxed),
            udp_bytes_in: self.udp_bytes_in.load(Relaxed),
            udp_bytes_out: self.udp_bytes_out.load(Relaxed),
            udp_gso_sends: self.udp_gso_sends.load(Relaxed),
            udp_mmsg_sends: self.udp_mmsg_sends.load(Relaxed),
            udp_send_errors: self.udp_send_errors.load(Relaxed),
            udp_recv_errors: self.udp_recv_errors.load(Relaxed),
            udp_unknown_ufrag: self.udp_unknown_ufrag.load(Relaxed),
            udp_unknown_address: self.udp_unknown_address.load(Relaxed),
            udp_garbage: self.udp_garbage.load(Relaxed),
            udp_foreign_source: self.udp_foreign_source.load(Relaxed),
            rtc_read_errors: self.rtc_read_errors.load(Relaxed),
            rtc_timeouts: self.rtc_timeouts.load(Relaxed),
            rtc_timeout_errors: self.rtc_timeout_errors.load(Relaxed),
            keyframe_requests_from_subscribers: self
                .keyframe_requests_from_subscribers
                .load(Relaxed),
            keyframe_requests_to_publishers: self.keyframe_requests_to_publishers.load(Relaxed),
            twcc_feedback_in: self.twcc_feedback_in.load(Relaxed),
            probe_clusters: self.probe_clusters.load(Relaxed),
            padding_packets_out: self.padding_packets_out.load(Relaxed),
            dynacast_updates: self.dynacast_updates.load(Relaxed),
            retransmissions_out: self.retransmissions_out.load(Relaxed),
            retransmissions_suppressed: self.retransmissions_suppressed.load(Relaxed),
            retransmissions_over_budget: self.retransmissions_over_budget.load(Relaxed),
            rtp_replayed_after_keyframe: self.rtp_replayed_after_keyframe.load(Relaxed),
            chat_messages: self.chat_messages.load(Relaxed),
            chat_refused: self.chat_refused.load(Relaxed),
            chat_dropped: self.chat_dropped.load(Relaxed),
            webhooks_sent: self.webhooks_sent.load(Relaxed),
            webhooks_failed: self.webhooks_failed.load(Relaxed),
            webhooks_dropped: self.webhooks_dropped.load(Relaxed),
            ws_join_timeouts: self.ws_join_timeouts.load(Relaxed),
            ws_write_timeouts: self.ws_write_timeouts.load(Relaxed),
            ws_liveness_timeouts: self.ws_liveness_timeouts.load(Relaxed),
            offers_refused: self.offers_refused.load(Relaxed),
            candidates_refused: self.candidates_refused.load(Relaxed),
            ice_connect_timeouts: self.ice_connect_timeouts.load(Relaxed),
            tcp_connections_accepted: self.tcp_connections_accepted.load(Relaxed),
            tcp_connections_refused: self.tcp_connections_refused.load(Relaxed),
            tcp_frames_in: self.tcp_frames_in.load(Relaxed),
            tcp_frames_out: self.tcp_frames_out.load(Relaxed),
            tcp_frames_dropped: self.tcp_frames_dropped.load(Relaxed),
            notifications_dropped: self.notifications_dropped.load(Relaxed),
            resyncs_sent: self.resyncs_sent.load(Relaxed),
            http_header_timeouts: self.http_header_timeouts.load(Relaxed),
            http_connections_refused: self.http_connections_refused.load(Relaxed),
            http_accept_errors: self.http_accept_errors.load(Relaxed),
            cluster_moved: self.cluster_moved.load(Relaxed),
            cluster_refused: self.cluster_refused.load(Relaxed),
            cluster_store_errors: self.cluster_store_errors.load(Relaxed),
            cluster_leases_lost: self.cluster_leases_lost.load(Relaxed),
            cluster_forwarded: self.cluster_forwarded.load(Relaxed),
            cluster_forward_failed: self.cluster_forward_failed.load(Relaxed),
            cluster_drained: self.cluster_drained.load(Relaxed),

            process_cpu_seconds: process::cpu_seconds(),
            process_rss_mb: process::status_mb("VmRSS:"),
            process_peak_rss_mb: process::status_mb("VmHWM:"),
            turn: self.turn.get().map(|t| t.snapshot()),
            node: self.node.get().cloned(),
        }
    }
}

/// This process's resource use, read from /proc (None elsewhere).
pub mod process {
    /// Kernel clock ticks per second for /proc times; 100 on every Linux we target.
    const TICKS_PER_SECOND: f64 = 100.0;

    /// User + system CPU seconds of this process.
    pub fn cpu_seconds() -> Option<f64> {
        cpu_seconds_of("self")
    }

    /// User + system CPU seconds of process `pid` ("self" for this one).
    pub fn cpu_seconds_of(pid: &str) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which may itself contain spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let mut fields = rest.split_whitespace().skip(11);
        let utime: f64 = fields.next()?.parse().ok()?;
        let stime: f64 = fields.next()?.parse().ok()?;
        Some((utime + stime) / TICKS_PER_SECOND)
    }

    /// A "Vm...:" line of /proc/self/status, in MiB.
    pub fn status_mb(key: &str) -> Option<f64> {
        status_mb_of("self", key)
    }

    /// A "Vm...:" line of /proc/PID/status, in MiB.
    pub fn status_mb_of(pid: &str, key: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        let kb: f64 = line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    #[cfg(all(test, target_os = "linux"))]
    mod tests {
        #[test]
        fn reads_this_process() {
            assert!(super::cpu_seconds().is_some());
            assert!(super::status_mb("VmRSS:").unwrap() > 0.0);
        }
    }
}

/// Every cause an RTP packet from a publisher can be dropped for, with its count: the
/// shard's own (`m`) and its rooms' (`rooms`, summed over shards). With what is
/// forwarded they add up (docs/metrics.md, "Where packets go").
pub fn rtp_drops(
    m: &MetricsSnapshot,
    rooms: &crate::room::RoomRtpCounts,
) -> [(&'static str, u64); 12] {
    [
        ("unknown_ssrc", m.rtp_in_unrouted),
        ("no_room", m.rtp_dropped_no_room),
        ("unknown_track", rooms.unknown_track),
        ("no_subscribers", rooms.no_subscribers),
        ("silenced", rooms.silenced),
        ("paused", rooms.legs.paused),
        ("other_layer", rooms.legs.other_layer),
        ("awaiting_keyframe", rooms.legs.awaiting_keyframe),
        ("stale", rooms.legs.stale),
        ("no_leg", m.rtp_dropped_no_leg),
        ("not_connected", m.rtp_dropped_not_connected),
        ("write_error", m.rtp_write_errors),
    ]
}
