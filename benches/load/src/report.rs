//! One run's figures: JSON (`--json`, stable field names) or a readable table.

use serde::Serialize;

use super::scenario::{Scenario, Shape};

#[derive(Debug, Serialize)]
pub struct Report {
    /// "switchyard" or "janus".
    pub target: String,
    pub scenario: Scenario,
    pub shape: Shape,
    pub participants: usize,
    /// (track, subscriber) pairs the server forwards.
    pub forwarded_streams: usize,
    pub duration_s: f64,
    /// Packets the server forwarded per second (its own counter), and took in.
    pub forwarded_pps: f64,
    /// Unique packets per second that reached the subscribers (the client's count).
    pub delivered_pps: f64,
    pub received_pps: f64,
    pub bitrate_out_mbps: f64,
    /// Unique packets the subscribers received / packets they should have.
    pub delivery_ratio: f64,
    pub packets_expected: u64,
    pub packets_received: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub join_to_first_packet_ms_p50: Option<f64>,
    pub join_to_first_packet_ms_p95: Option<f64>,
    /// Server CPU time per forwarded packet, and in % of one core.
    pub server_cpu_us_per_packet: Option<f64>,
    pub server_cpu_percent: Option<f64>,
    /// Peak resident memory of the server.
    pub server_rss_mb: Option<f64>,
    /// Server drops: datagrams its socket refused to send, and RTP of no published track.
    pub server_leg_drops: u64,
    pub server_ingress_drops: u64,
    /// This load tester's CPU in % of one core (near 100 x cores: the client saturated).
    pub load_cpu_percent: Option<f64>,
    pub load_cores: usize,
    /// Turnover before the measured window (`--churn`), when asked for.
    pub churn: Option<Churn>,
}

/// Participants who came and went (`--churn`).
#[derive(Debug, Default, Serialize)]
pub struct Churn {
    pub joined: usize,
    pub failed: usize,
    pub seconds: f64,
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2} {unit}"))
}

impl Report {
    pub fn table(&self) -> String {
        let s = &self.shape;
        let rows = [
            ("target", self.target.clone()),
            (
                "scenario",
                format!(
                    "{:?} ({} room(s) x {} video pub, {} audio pub, {} sub)",
                    self.scenario, s.rooms, s.video_publishers, s.audio_publishers, s.subscribers
                ),
            ),
            (
                "measured",
                format!(
                    "{:.1} s, {} participants, {} forwarded streams",
                    self.duration_s, self.participants, self.forwarded_streams
                ),
            ),
            (
                "forwarded",
                format!(
                    "{:.0} packets/s out, {:.0} packets/s in, {:.2} Mbit/s out",
                    self.forwarded_pps, self.received_pps, self.bitrate_out_mbps
                ),
            ),
            (
                "delivery",
                format!(
                    "{:.4} ({} of {} packets)",
                    self.delivery_ratio, self.packets_received, self.packets_expected
                ),
            ),
            (
                "latency p50/p95/p99",
                format!(
                    "{} / {} / {}",
                    opt(self.latency_p50_ms, "ms"),
                    opt(self.latency_p95_ms, "ms"),
                    opt(self.latency_p99_ms, "ms")
                ),
            ),
            (
                "join -> first packet p50/p95",
                format!(
                    "{} / {}",
                    opt(self.join_to_first_packet_ms_p50, "ms"),
                    opt(self.join_to_first_packet_ms_p95, "ms")
                ),
            ),
            (
                "server CPU",
                format!(
                    "{} per forwarded packet, {}",
                    opt(self.server_cpu_us_per_packet, "us"),
                    opt(self.server_cpu_percent, "% of a core")
                ),
            ),
            ("server peak RSS", opt(self.server_rss_mb, "MiB")),
            (
                "server drops",
                format!(
                    "{} datagrams the socket refused, {} unrouted RTP packets",
                    self.server_leg_drops, self.server_ingress_drops
                ),
            ),
            (
                "load tester CPU",
                format!(
                    "{} ({} cores)",
                    opt(self.load_cpu_percent, "% of a core"),
                    self.load_cores
                ),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }
}
