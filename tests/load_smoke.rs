//! A short smoke load: the real server binary, and `switchyard-load` in a process of its
//! own driving 1 publisher and 2 subscribers over real WebRTC for a few seconds.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the server (our own child, by its handle) however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server() -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--listen", "127.0.0.1:0", "--udp-port", "0"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("server stdout");
        if let Some(url) = line.split("listening on ").nth(1) {
            return (server, url.trim_end_matches('/').to_string());
        }
        assert!(Instant::now() < deadline, "no 'listening on' line");
    }
    panic!("server exited before listening");
}

/// The load tester is a package of its own in the workspace (benches/load); cargo puts its
/// binary beside the server's. `cargo test --workspace` (tests/run-all.sh) builds both.
fn load_tester() -> std::path::PathBuf {
    let path =
        std::path::Path::new(env!("CARGO_BIN_EXE_switchyard")).with_file_name("switchyard-load");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo build --release --workspace)",
        path.display()
    );
    path
}

#[test]
fn smoke_load_delivers_everything_and_reports_the_json_fields() {
    let (_server, url) = start_server();
    let out = Command::new(load_tester())
        .args([
            "--url",
            &url,
            "--scenario",
            "livestream",
            "--subscribers",
            "2",
            "--duration",
            "4",
            "--json",
        ])
        .output()
        .expect("run switchyard-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "switchyard-load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    eprintln!("{report:#}");
    for field in [
        "forwarded_pps",
        "delivery_ratio",
        "latency_p50_ms",
        "latency_p99_ms",
        "server_cpu_us_per_packet",
        "server_rss_mb",
        "join_to_first_packet_ms_p50",
    ] {
        assert!(report[field].is_number(), "{field} is reported: {report}");
    }
    assert_eq!(report["participants"], 3);
    let delivery = report["delivery_ratio"].as_f64().unwrap();
    assert!(delivery >= 0.99, "delivery {delivery}");
    assert!(
        report["forwarded_pps"].as_f64().unwrap() > 100.0,
        "media was forwarded"
    );
}
