//! `/metrics` scraped by a real Prometheus: a meeting of two headless participants runs
//! through the server while Debian's `prometheus` (started here on 127.0.0.1, with a
//! generated config and a temporary data directory) scrapes it every second; then its
//! query API must answer with the server's forwarded-packet count. tests/run-all.sh
//! installs the package; without it the Prometheus part is skipped with a message.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{client, start_server, wait_until};
use switchyard_synthetic::http;

/// Kills the Prometheus this test started (by its own handle) and removes its files.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_loopback_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn find_prometheus() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
}

fn start_prometheus(binary: PathBuf, target: &str) -> Prometheus {
    let dir = std::env::temp_dir().join(format!("switchyard-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_loopback_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    Prometheus {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// The value of the first series `query` returns, if Prometheus has one yet.
async fn query(prometheus: &str, query: &str) -> Option<f64> {
    let url = format!("{prometheus}/api/v1/query?query={query}");
    let body = http::get_json(&url).await.ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_forwarding_counters() {
    let server = start_server().await;
    let a = client::join(&server.ws, "scraped", "Ada").await;
    let b = client::join(&server.ws, "scraped", "Bob").await;
    assert!(
        wait_until(20, || a.shared.packets_from(&b.id, "video") > 50).await,
        "the meeting never got going"
    );

    // The endpoint itself, read directly.
    let (status, text) = http::get_text(&format!("{}/metrics", server.http))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("switchyard_participants 2"), "{text}");
    assert!(text.contains("switchyard_room_participants{room=\"scraped\"} 2"));
    assert!(text.ends_with("# EOF\n"));

    let Some(binary) = find_prometheus() else {
        eprintln!(
            "SKIPPED the Prometheus part: no `prometheus` on PATH (tests/run-all.sh installs \
             Debian's package; `apt-get install prometheus`)"
        );
        return;
    };
    let target = server.http.trim_start_matches("http://");
    let prometheus = start_prometheus(binary, target);
    let mut answer = None;
    for _ in 0..120 {
        answer = query(&prometheus.url, "switchyard_rtp_forwarded_packets_total").await;
        if answer.is_some_and(|v| v > 0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = std::fs::read_to_string(prometheus.dir.join("prometheus.log")).unwrap_or_default();
    let forwarded = answer
        .unwrap_or_else(|| panic!("Prometheus never answered with the counter; its log:\n{log}"));
    assert!(forwarded > 0.0);
    let up = query(&prometheus.url, "up%7Bjob%3D%22switchyard%22%7D").await;
    assert_eq!(up, Some(1.0), "the scrape target is up");
    let participants = query(&prometheus.url, "switchyard_participants").await;
    eprintln!("Prometheus answered: forwarded {forwarded} packets, {participants:?} participants");
    assert_eq!(participants, Some(2.0));
}
