//! switchyard-load: connects synthetic participants to a running Switchyard server
//! through the real signaling API and real WebRTC (DTLS-SRTP over UDP), in a process of
//! its own, and reports forwarding throughput, delivery, latency and CPU cost.
//!
//!     switchyard-load --url http://127.0.0.1:8080 --scenario livestream --duration 20 --json

mod report;
mod scenario;

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use switchyard::metrics::process;
use switchyard_synthetic::janus::{self, JanusPeer};
use switchyard_synthetic::lite::LiteParticipant;
use switchyard_synthetic::pool::Pool;
use switchyard_synthetic::{http, now_micros, percentile, MediaPlan, Shared, Video};

use report::{Churn, Report};
use scenario::{Scenario, Shape};

#[derive(Parser, Debug)]
#[command(
    name = "switchyard-load",
    about = "Load tester for Switchyard: synthetic WebRTC participants"
)]
struct Args {
    /// The server's HTTP URL; several (comma separated, or --url again) for the nodes
    /// of a cluster: room N joins through URL N mod count (the cluster places it, and
    /// moves the participants there), and the server figures are the nodes' sums.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_delimiter = ',')]
    url: Vec<String>,
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
    /// Allow a server URL outside 127.0.0.0/8.
    #[arg(long)]
    allow_remote: bool,
    /// Which server speaks at --url: Switchyard (its signaling API) or Janus (the
    /// videoroom plugin over Janus's HTTP API, e.g. http://127.0.0.2:8088/janus).
    #[arg(long, value_enum, default_value = "switchyard")]
    target: Target,
    /// Address the synthetic participants' media sockets bind.
    #[arg(long, default_value = "127.0.0.1")]
    media_ip: IpAddr,
    /// Read the server's CPU and peak RSS from /proc/PID (needed for Janus, which has no
    /// stats endpoint; for Switchyard its /api/stats is used).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Publish video as three simulcast layers (q, h, f; Switchyard target only). The
    /// subscribers, unconstrained, should get the full layer; delivery counts that one.
    #[arg(long)]
    simulcast: bool,
    /// Threads carrying the synthetic participants' media (sans-I/O rtc connections,
    /// many per thread); Switchyard target only.
    #[arg(long, default_value_t = 1)]
    load_threads: usize,
    /// Join this room instead of a fresh one per run (one room only), e.g. to fill a room
    /// a browser joins too.
    #[arg(long)]
    room: Option<String>,
    /// Video frames per second of each publisher (1-100).
    #[arg(long, default_value_t = 30)]
    video_fps: u32,
    /// Audio packets per second of each publisher (1-100; a muted microphone sends a few).
    #[arg(long, default_value_t = 50)]
    audio_pps: u32,
    /// Turnover before the measured window (Switchyard target only): this many more
    /// participants, publishing audio and video, join the first room one after another...
    #[arg(long, default_value_t = 0)]
    churn: usize,
    /// ...one every this many milliseconds...
    #[arg(long, default_value_t = 1000)]
    churn_gap_ms: u64,
    /// ...and the one who has been there longest leaves once this many are present.
    #[arg(long, default_value_t = 2)]
    churn_present: usize,
    /// How the participants' media reaches the server (Switchyard target only): `udp`;
    /// `tcp` (ICE-TCP to the media port: the server needs --ice-tcp true); `turn`
    /// (relayed by the TURN server in joined.ice_servers, over UDP: the server needs
    /// --turn-udp-port).
    #[arg(long, default_value = "udp")]
    transport: switchyard_synthetic::link::Transport,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Target {
    Switchyard,
    Janus,
}

/// One synthetic person: what it publishes, what it received, and its connections.
struct Member {
    room: usize,
    /// How subscribers' statistics name this member's streams.
    key: String,
    shared: Arc<Shared>,
    video: bool,
    audio: bool,
    connections: Connections,
}

enum Connections {
    Switchyard(LiteParticipant),
    Janus(Vec<JanusPeer>),
}

impl Member {
    async fn leave(self) {
        match self.connections {
            Connections::Switchyard(p) => p.leave().await,
            Connections::Janus(peers) => {
                for p in peers {
                    p.close().await;
                }
            }
        }
    }
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
    for url in &args.url {
        check_target(url, args.allow_remote)?;
    }
    let shape = shape_of(&args);
    let bases: Vec<String> = args
        .url
        .iter()
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    if bases.len() > 1 && (args.target == Target::Janus || args.server_pid.is_some()) {
        return Err("several --url are for a Switchyard cluster, without --server-pid".into());
    }
    let base = bases[0].clone();
    let probe = ServerProbe::new(&args, &bases).await?;

    let video_pps =
        (args.video_kbps as usize * 1000 / 8 / args.video_packet_bytes.max(1)).max(1) as u32;
    let publisher_plan = |video: bool| MediaPlan {
        video: video.then_some(Video::Vp8),
        audio: true,
        video_pps,
        video_fps: args.video_fps.clamp(1, 100),
        audio_pps: args.audio_pps.clamp(1, 100),
        video_packet_bytes: args.video_packet_bytes,
        audio_packet_bytes: args.audio_packet_bytes,
        simulcast: args.simulcast,
        ..MediaPlan::default()
    };
    let pools = match args.target {
        Target::Switchyard => (0..args.load_threads.max(1))
            .map(|i| Pool::start(&format!("load-media-{i}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot start a media thread: {e}"))?,
        Target::Janus => Vec::new(),
    };
    let run_id = now_micros() % 100_000;
    let room_names: Vec<String> = match (&args.room, shape.rooms) {
        (Some(name), 1) => vec![name.clone()],
        (Some(_), _) => return Err("--room names one room: leave --rooms at 1".into()),
        (None, n) => (0..n).map(|room| format!("load-{run_id}-{room}")).collect(),
    };
    let members = match args.target {
        Target::Switchyard => {
            join_switchyard(&args, &bases, &shape, &room_names, &pools, &publisher_plan).await?
        }
        Target::Janus => join_janus(&args, &base, &shape, &publisher_plan).await?,
    };
    let churn = match (args.churn, args.target) {
        (0, _) => None,
        (_, Target::Janus) => return Err("--churn is for the Switchyard target".into()),
        (_, Target::Switchyard) => {
            Some(churn(&args, &base, &room_names[0], &pools, publisher_plan(true)).await)
        }
    };

    // Settle: until every member receives every stream it should, at most 20 s.
    let settle_deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < settle_deadline && !all_streams_flowing(&members) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Measure.
    for m in &members {
        let mut received = m.shared.received.lock().unwrap_or_else(|e| e.into_inner());
        for s in received.values_mut() {
            s.latencies_us.clear();
        }
    }
    let sent_start: Vec<(u64, u64)> = members.iter().map(sent_counters).collect();
    let server_start = probe.sample().await?;
    let own_cpu_start = process::cpu_seconds();
    let started = Instant::now();
    let mut peak_rss = server_start["process_peak_rss_mb"].as_f64();
    let mut last = (received_packets(&members), Instant::now());
    let window = Duration::from_secs(args.duration);
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(2).min(window.saturating_sub(started.elapsed())))
            .await;
        if let Ok(now) = probe.sample().await {
            peak_rss = now["process_peak_rss_mb"].as_f64().or(peak_rss);
        }
        let received = received_packets(&members);
        let pps = (received - last.0) as f64 / last.1.elapsed().as_secs_f64().max(0.001);
        progress(&format!(
            "{:>4.0} s  {:>7.0} packets/s reach the subscribers",
            started.elapsed().as_secs_f64(),
            pps
        ));
        last = (received, Instant::now());
    }
    let secs = started.elapsed().as_secs_f64();
    let sent_end: Vec<(u64, u64)> = members.iter().map(sent_counters).collect();
    let server_end = probe.sample().await?;
    let own_cpu_end = process::cpu_seconds();
    // Packets in flight at the end still count.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let video_share = if args.simulcast {
        publisher_plan(true).full_layer_share()
    } else {
        1.0
    };
    let (expected, received, latencies, first_packets) =
        tally(&members, &sent_start, &sent_end, video_share);
    // Janus counts nothing we can read: there, what the subscribers received stands in.
    let forwarded = match server_end["rtp_forwarded"].is_number() {
        true => delta(&server_end, &server_start, "rtp_forwarded"),
        false => received as f64,
    };
    let cpu = delta(&server_end, &server_start, "process_cpu_seconds");
    let has_cpu = server_end["process_cpu_seconds"].is_number();
    let ms = |us: Option<u32>| us.map(|v| v as f64 / 1000.0);
    let report = Report {
        scenario: args.scenario,
        shape,
        participants: members.len(),
        forwarded_streams: shape.rooms * shape.forwarded_streams_per_room(),
        duration_s: secs,
        target: format!("{:?}", args.target).to_lowercase(),
        forwarded_pps: forwarded / secs,
        delivered_pps: received as f64 / secs,
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
        server_leg_drops: delta(&server_end, &server_start, "udp_send_errors") as u64,
        server_ingress_drops: delta(&server_end, &server_start, "rtp_in_unrouted") as u64,
        load_cpu_percent: own_cpu_start
            .zip(own_cpu_end)
            .map(|(a, b)| (b - a) / secs * 100.0),
        load_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        churn,
    };
    for m in members {
        m.leave().await;
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
    let s = &m.shared;
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
        .filter(move |(_, p)| p.room == me.room && p.key != me.key)
        .flat_map(|(i, p)| {
            let video = p.video.then_some((i, "video"));
            let audio = p.audio.then_some((i, "audio"));
            video.into_iter().chain(audio)
        })
}

fn all_streams_flowing(members: &[Member]) -> bool {
    members.iter().all(|me| {
        expected_streams(me, members)
            .all(|(p, kind)| me.shared.packets_from(&members[p].key, kind) > 0)
    })
}

/// Expected and received unique packets over the window, latency samples (µs) and each
/// subscriber's join-to-first-packet time (µs).
/// `video_share`: the part of a publisher's video packets one subscriber should get
/// (with simulcast, the full layer's).
fn tally(
    members: &[Member],
    start: &[(u64, u64)],
    end: &[(u64, u64)],
    video_share: f64,
) -> (u64, u64, Vec<u32>, Vec<u32>) {
    let (mut expected, mut received) = (0, 0);
    let mut latencies = Vec::new();
    let mut first_packets = Vec::new();
    for me in members {
        let shared = &me.shared;
        let mut first: Option<u64> = None;
        for (p, kind) in expected_streams(me, members) {
            let (from, to, share) = if kind == "video" {
                (start[p].0, end[p].0, video_share)
            } else {
                (start[p].1, end[p].1, 1.0)
            };
            expected += ((to - from) as f64 * share).round() as u64;
            if let Some(s) = shared.stats(&members[p].key, kind) {
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

fn received_packets(members: &[Member]) -> u64 {
    members
        .iter()
        .map(|m| {
            m.shared
                .received
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(|s| s.packets)
                .sum::<u64>()
        })
        .sum()
}

/// The roles in one room, in joining order: video publishers, audio publishers, listeners.
fn roles(shape: &Shape) -> Vec<(bool, bool)> {
    std::iter::repeat_n((true, true), shape.video_publishers)
        .chain(std::iter::repeat_n((false, true), shape.audio_publishers))
        .chain(std::iter::repeat_n((false, false), shape.subscribers))
        .collect()
}

fn ws_url(base: &str) -> String {
    format!("ws{}/ws", base.strip_prefix("http").unwrap_or(base))
}

async fn join_switchyard(
    args: &Args,
    bases: &[String],
    shape: &Shape,
    room_names: &[String],
    pools: &[Pool],
    plan: &dyn Fn(bool) -> MediaPlan,
) -> Result<Vec<Member>, String> {
    let total = shape.rooms * shape.participants_per_room();
    let gap = Duration::from_secs_f64(1.0 / args.ramp.max(0.1));
    let mut members = Vec::with_capacity(total);
    for (room, room_name) in room_names.iter().enumerate() {
        let ws_url = ws_url(&bases[room % bases.len()]);
        for (i, (video, audio)) in roles(shape).into_iter().enumerate() {
            let media = if audio {
                plan(video)
            } else {
                MediaPlan::none()
            };
            let pool = &pools[members.len() % pools.len()];
            let p = LiteParticipant::join_via(
                pool,
                &ws_url,
                room_name,
                &format!("synthetic-{i}"),
                media,
                args.media_ip,
                args.transport.clone(),
            )
            .await
            .map_err(|e| e.to_string())?;
            members.push(Member {
                room,
                key: p.id.clone(),
                shared: p.shared.clone(),
                video,
                audio,
                connections: Connections::Switchyard(p),
            });
            progress(&format!("joined {}/{total}", members.len()));
            tokio::time::sleep(gap).await;
        }
    }
    Ok(members)
}

/// Turnover: `--churn` participants join `room` one after another, every
/// `--churn-gap-ms`; once `--churn-present` of them are there, the one who came first
/// leaves (politely, with `leave`). A join that fails is counted, not fatal.
async fn churn(args: &Args, base: &str, room: &str, pools: &[Pool], plan: MediaPlan) -> Churn {
    let ws_url = ws_url(base);
    let started = Instant::now();
    let gap = Duration::from_millis(args.churn_gap_ms);
    let mut present = std::collections::VecDeque::new();
    let mut tally = Churn::default();
    for i in 0..args.churn {
        let pool = &pools[i % pools.len()];
        let name = format!("churn-{i}");
        let joined = LiteParticipant::join_via(
            pool,
            &ws_url,
            room,
            &name,
            plan,
            args.media_ip,
            args.transport.clone(),
        );
        match joined.await {
            Ok(p) => {
                tally.joined += 1;
                present.push_back(p);
            }
            Err(e) => {
                tally.failed += 1;
                progress(&format!("{name} could not join: {e}"));
            }
        }
        while present.len() > args.churn_present.max(1) {
            if let Some(oldest) = present.pop_front() {
                oldest.leave().await;
            }
        }
        progress(&format!("churn {}/{}", i + 1, args.churn));
        tokio::time::sleep(gap).await;
    }
    for p in present {
        p.leave().await;
    }
    tally.seconds = started.elapsed().as_secs_f64();
    tally
}

/// Janus: per room, a videoroom with a realistic bitrate cap; each publisher joins with
/// its own PeerConnection, then every member subscribes to every other member's feed.
async fn join_janus(
    args: &Args,
    base: &str,
    shape: &Shape,
    plan: &dyn Fn(bool) -> MediaPlan,
) -> Result<Vec<Member>, String> {
    let gap = Duration::from_secs_f64(1.0 / args.ramp.max(0.1));
    let run_id = now_micros() % 100_000;
    let mut members: Vec<Member> = Vec::new();
    for room in 0..shape.rooms {
        let room_id = janus::create_room(
            base,
            run_id * 1000 + room as u64,
            shape.video_publishers + shape.audio_publishers,
        )
        .await
        .map_err(|e| e.to_string())?;
        let first = members.len();
        let mut feeds = Vec::new();
        for (i, (video, audio)) in roles(shape).into_iter().enumerate() {
            let shared = Arc::new(Shared::default());
            let mut connections = Vec::new();
            let mut key = format!("listener-{room}-{i}");
            if audio {
                let (peer, feed) = JanusPeer::publish(
                    base,
                    room_id,
                    &format!("synthetic-{i}"),
                    plan(video),
                    args.media_ip,
                    shared.clone(),
                )
                .await
                .map_err(|e| e.to_string())?;
                connections.push(peer);
                key = feed.to_string();
                feeds.push(feed);
            } else {
                shared
                    .join_started_micros
                    .store(now_micros(), std::sync::atomic::Ordering::Relaxed);
            }
            members.push(Member {
                room,
                key,
                shared,
                video,
                audio,
                connections: Connections::Janus(connections),
            });
        }
        for m in members[first..].iter_mut() {
            for feed in feeds.iter().filter(|f| f.to_string() != m.key) {
                let peer = JanusPeer::subscribe(
                    base,
                    room_id,
                    *feed,
                    feed.to_string(),
                    args.media_ip,
                    m.shared.clone(),
                )
                .await
                .map_err(|e| e.to_string())?;
                if let Connections::Janus(list) = &mut m.connections {
                    list.push(peer);
                }
                tokio::time::sleep(gap).await;
            }
            progress(&format!("joined {} in room {room}", m.key));
        }
    }
    Ok(members)
}

/// The nodes' `/api/stats` as one: each top-level number summed (counters, CPU seconds,
/// memory); everything else as the first node has it.
fn sum_numbers(nodes: Vec<Value>) -> Value {
    let mut nodes = nodes.into_iter();
    let mut total = nodes.next().unwrap_or_default();
    for node in nodes {
        let (Some(total), Some(node)) = (total.as_object_mut(), node.as_object()) else {
            continue;
        };
        for (key, value) in total.iter_mut() {
            if let (Some(a), Some(b)) = (value.as_f64(), node.get(key).and_then(Value::as_f64)) {
                *value = serde_json::json!(a + b);
            }
        }
    }
    total
}

/// Where the server's counters, CPU and memory come from.
enum ServerProbe {
    /// Switchyard's /api/stats, summed over the nodes given (and, if given, /proc/PID
    /// for CPU and memory).
    Api { urls: Vec<String>, pid: Option<u32> },
    /// Only /proc/PID (Janus).
    Pid(Option<u32>),
}

impl ServerProbe {
    async fn new(args: &Args, bases: &[String]) -> Result<ServerProbe, String> {
        let base = &bases[0];
        match args.target {
            Target::Switchyard => {
                let urls: Vec<String> = bases.iter().map(|b| format!("{b}/api/stats")).collect();
                for url in &urls {
                    http::get_json(url)
                        .await
                        .map_err(|e| format!("is the server running? {e}"))?;
                }
                Ok(ServerProbe::Api {
                    urls,
                    pid: args.server_pid,
                })
            }
            Target::Janus => {
                let info = http::get(&format!("{base}/info"))
                    .await
                    .map_err(|e| format!("is Janus running? {e}"))?;
                if info.1["janus"] != "server_info" {
                    return Err(format!("{base}/info is not Janus: {}", info.1));
                }
                Ok(ServerProbe::Pid(args.server_pid))
            }
        }
    }

    /// A JSON object in /api/stats's shape, as far as it can be filled.
    async fn sample(&self) -> Result<Value, String> {
        let (mut v, pid) = match self {
            ServerProbe::Api { urls, pid } => {
                let mut nodes = Vec::with_capacity(urls.len());
                for url in urls {
                    nodes.push(http::get_json(url).await?);
                }
                (sum_numbers(nodes), *pid)
            }
            ServerProbe::Pid(pid) => (serde_json::json!({}), *pid),
        };
        if let Some(pid) = pid {
            let pid = pid.to_string();
            v["process_cpu_seconds"] = serde_json::json!(process::cpu_seconds_of(&pid));
            v["process_peak_rss_mb"] = serde_json::json!(process::status_mb_of(&pid, "VmHWM:"));
        }
        Ok(v)
    }
}
