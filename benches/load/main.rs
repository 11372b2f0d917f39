//! switchyard-load: connects synthetic participants to a running Switchyard server
//! through the real signaling API and real WebRTC (DTLS-SRTP over UDP), in a process of
//! its own, and reports forwarding throughput, delivery, latency and CPU cost.
//!
//!     switchyard-load --url http://127.0.0.1:8080 --scenario livestream --duration 20 --json

mod report;
mod scenario;

use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use switchyard::metrics::process;
use switchyard::synthetic::{http, now_micros, percentile, MediaPlan, SyntheticParticipant, Video};

use report::Report;
use scenario::{Scenario, Shape};

#[derive(Parser, Debug)]
#[command(
    name = "switchyard-load",
    about = "Load tester for Switchyard: synthetic WebRTC participants"
)]
struct Args {
    /// The server's HTTP URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, value_enum, default_value = "livestream")]
    scenario: Scenario,
    /// Multiplies the scenario's crowd.
    #[arg(long, default_value_t = 1)]
    scale: usize,
    /// Override the scenario: rooms.
    #[arg(long)]
    rooms: Option<usize>,
    /// Override: participants per room publishing video and audio.
    #[arg(long)]
    video_publishers: Option<usize>,
    /// Override: participants per room publishing audio only.
    #[arg(long)]
    audio_publishers: Option<usize>,
    /// Override: receive-only participants per room.
    #[arg(long)]
    subscribers: Option<usize>,
    /// Video bitrate per publisher.
    #[arg(long, default_value_t = 1500)]
    video_kbps: u32,
    #[arg(long, default_value_t = 1100)]
    video_packet_bytes: usize,
    #[arg(long, default_value_t = 100)]
    audio_packet_bytes: usize,
    /// Seconds measured, after everyone has joined and media flows.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Joins per second while ramping up.
    #[arg(long, default_value_t = 10.0)]
    ramp: f64,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Allow a server URL outside 127.0.0.0/8 (media still binds loopback).
    #[arg(long)]
    allow_remote: bool,
}

struct Member {
    room: usize,
    participant: SyntheticParticipant,
    video: bool,
    audio: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn shape_of(args: &Args) -> Shape {
    let mut s = args.scenario.shape(args.scale);
    s.rooms = args.rooms.unwrap_or(s.rooms).max(1);
    s.video_publishers = args.video_publishers.unwrap_or(s.video_publishers);
    s.audio_publishers = args.audio_publishers.unwrap_or(s.audio_publishers);
    s.subscribers = args.subscribers.unwrap_or(s.subscribers);
    s
}

fn check_target(url: &str, allow_remote: bool) -> Result<(), String> {
    let host = url
        .strip_prefix("http://")
        .ok_or("the URL must start with http://")?
        .split('/')
        .next()
        .unwrap_or_default();
    let addrs: Vec<_> = host
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .collect();
    if !allow_remote && addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "{host} is not a loopback address; pass --allow-remote to load another machine"
        ));
    }
    Ok(())
}

async fn run(args: Args) -> Result<(), String> {
    check_target(&args.url, args.allow_remote)?;
    let shape = shape_of(&args);
    let base = args.url.trim_end_matches('/').to_string();
    let ws_url = format!("ws{}/ws", base.strip_prefix("http").unwrap_or(&base));
    let stats_url = format!("{base}/api/stats");
    http::get_json(&stats_url)
        .await
        .map_err(|e| format!("is the server running? {e}"))?;

    let video_pps =
        (args.video_kbps as usize * 1000 / 8 / args.video_packet_bytes.max(1)).max(1) as u32;
    let publisher_plan = |video: bool| MediaPlan {
        video: video.then_some(Video::Vp8),
        audio: true,
        video_pps,
        video_packet_bytes: args.video_packet_bytes,
        audio_packet_bytes: args.audio_packet_bytes,
        ..MediaPlan::default()
    };

    // Ramp up: publishers first, so subscribers find media flowing.
    let total = shape.rooms * shape.participants_per_room();
    let gap = Duration::from_secs_f64(1.0 / args.ramp.max(0.1));
    let mut members = Vec::with_capacity(total);
    let run_id = now_micros() % 100_000;
    for room in 0..shape.rooms {
        let room_name = format!("load-{run_id}-{room}");
        let roles = std::iter::repeat_n((true, true), shape.video_publishers)
            .chain(std::iter::repeat_n((false, true), shape.audio_publishers))
            .chain(std::iter::repeat_n((false, false), shape.subscribers));
        for (i, (video, audio)) in roles.enumerate() {
            let plan = if audio {
                publisher_plan(video)
            } else {
                MediaPlan::none()
            };
            let participant =
                SyntheticParticipant::join(&ws_url, &room_name, &format!("synthetic-{i}"), plan)
                    .await
                    .map_err(|e| e.to_string())?;
            members.push(Member {
                room,
                participant,
                video,
                audio,
            });
            progress(&format!("joined {}/{total}", members.len()));
            tokio::time::sleep(gap).await;
        }
    }

    // Settle: until every member receives every stream it should, at most 20 s.
    let settle_deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < settle_deadline && !all_streams_flowing(&members) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Measure.
    for m in &members {
        for s in m
            .participant
            .shared
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            s.latencies_us.clear();
        }
    }
    let sent_start: Vec<(u64, u64)> = members.iter().map(sent_counters).collect();
    let server_start = http::get_json(&stats_url).await?;
    let own_cpu_start = process::cpu_seconds();
    let started = Instant::now();
    let mut peak_rss = server_start["process_peak_rss_mb"].as_f64();
    let mut last = server_start.clone();
    while started.elapsed() < Duration::from_secs(args.duration) {
        tokio::time::sleep(
            Duration::from_secs(2)
                .min(Duration::from_secs(args.duration).saturating_sub(started.elapsed())),
        )
        .await;
        if let Ok(now) = http::get_json(&stats_url).await {
            let pps = (delta(&now, &last, "rtp_forwarded")) / 2.0;
            peak_rss = now["process_peak_rss_mb"].as_f64().or(peak_rss);
            progress(&format!(
                "{:>4.0} s  {:>7.0} forwarded packets/s",
                started.elapsed().as_secs_f64(),
                pps
            ));
            last = now;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let sent_end: Vec<(u64, u64)> = members.iter().map(sent_counters).collect();
    let server_end = http::get_json(&stats_url).await?;
    let own_cpu_end = process::cpu_seconds();
    // Packets in flight at the end still count.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (expected, received, latencies, first_packets) = tally(&members, &sent_start, &sent_end);
    let forwarded = delta(&server_end, &server_start, "rtp_forwarded");
    let cpu = delta(&server_end, &server_start, "process_cpu_seconds");
    let has_cpu = server_end["process_cpu_seconds"].is_number();
    let ms = |us: Option<u32>| us.map(|v| v as f64 / 1000.0);
    let report = Report {
        scenario: args.scenario,
        shape,
        participants: members.len(),
        forwarded_streams: shape.rooms * shape.forwarded_streams_per_room(),
        duration_s: secs,
        forwarded_pps: forwarded / secs,
        received_pps: delta(&server_end, &server_start, "rtp_in") / secs,
        bitrate_out_mbps: delta(&server_end, &server_start, "rtp_forwarded_bytes") * 8.0
            / secs
            / 1e6,
        delivery_ratio: if expected == 0 {
            0.0
        } else {
            received as f64 / expected as f64
        },
        packets_expected: expected,
        packets_received: received,
        latency_p50_ms: ms(percentile(&latencies, 50.0)),
        latency_p95_ms: ms(percentile(&latencies, 95.0)),
        latency_p99_ms: ms(percentile(&latencies, 99.0)),
        join_to_first_packet_ms_p50: ms(percentile(&first_packets, 50.0)),
        join_to_first_packet_ms_p95: ms(percentile(&first_packets, 95.0)),
        server_cpu_us_per_packet: (has_cpu && forwarded > 0.0).then(|| cpu * 1e6 / forwarded),
        server_cpu_percent: has_cpu.then(|| cpu / secs * 100.0),
        server_rss_mb: peak_rss,
        server_leg_drops: delta(&server_end, &server_start, "rtp_leg_dropped") as u64,
        server_ingress_drops: delta(&server_end, &server_start, "rtp_in_dropped") as u64,
        load_cpu_percent: own_cpu_start
            .zip(own_cpu_end)
            .map(|(a, b)| (b - a) / secs * 100.0),
        load_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    for m in members {
        m.participant.leave().await;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn progress(line: &str) {
    eprintln!("switchyard-load: {line}");
}

fn delta(end: &Value, start: &Value, key: &str) -> f64 {
    end[key].as_f64().unwrap_or(0.0) - start[key].as_f64().unwrap_or(0.0)
}

fn sent_counters(m: &Member) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &m.participant.shared;
    (s.video_sent.load(Relaxed), s.audio_sent.load(Relaxed))
}

/// The (publisher id, kind) streams `me` should receive.
fn expected_streams<'a>(
    me: &'a Member,
    members: &'a [Member],
) -> impl Iterator<Item = (usize, &'static str)> + 'a {
    members
        .iter()
        .enumerate()
        .filter(move |(_, p)| p.room == me.room && p.participant.id != me.participant.id)
        .flat_map(|(i, p)| {
            let video = p.video.then_some((i, "video"));
            let audio = p.audio.then_some((i, "audio"));
            video.into_iter().chain(audio)
        })
}

fn all_streams_flowing(members: &[Member]) -> bool {
    members.iter().all(|me| {
        expected_streams(me, members).all(|(p, kind)| {
            me.participant
                .shared
                .packets_from(&members[p].participant.id, kind)
                > 0
        })
    })
}

/// Expected and received unique packets over the window, latency samples (µs) and each
/// subscriber's join-to-first-packet time (µs).
fn tally(
    members: &[Member],
    start: &[(u64, u64)],
    end: &[(u64, u64)],
) -> (u64, u64, Vec<u32>, Vec<u32>) {
    let (mut expected, mut received) = (0, 0);
    let mut latencies = Vec::new();
    let mut first_packets = Vec::new();
    for me in members {
        let shared = &me.participant.shared;
        let mut first: Option<u64> = None;
        for (p, kind) in expected_streams(me, members) {
            let (from, to) = if kind == "video" {
                (start[p].0, end[p].0)
            } else {
                (start[p].1, end[p].1)
            };
            expected += to - from;
            if let Some(s) = shared.stats(&members[p].participant.id, kind) {
                received += s.unique_in(from, to);
                latencies.extend_from_slice(&s.latencies_us);
                first = first
                    .min(s.first_packet_micros)
                    .or(first)
                    .or(s.first_packet_micros);
            }
        }
        if let Some(first) = first {
            let joined = shared
                .join_started_micros
                .load(std::sync::atomic::Ordering::Relaxed);
            first_packets.push(first.saturating_sub(joined).min(u32::MAX as u64) as u32);
        }
    }
    latencies.sort_unstable();
    first_packets.sort_unstable();
    (expected, received, latencies, first_packets)
}
