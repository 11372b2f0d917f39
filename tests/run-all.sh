#!/usr/bin/env bash
# The one command that runs every test (README "Test"; .ci/run calls exactly this):
# unit tests of the pure core, integration tests with headless webrtc-rs clients against
# a real server on 127.0.0.1:0, and end-to-end tests in headless Chromium through the
# bundled web client. Installs what it needs (Chromium, Firefox and Prometheus from
# Debian, playwright-core from npm) when missing. Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== test dependencies (Debian packages, when missing)"
bash tests/install-deps.sh

echo "== build (release: the media tests measure real forwarding)"
cargo build --release --locked --workspace

# Debian's prometheus binary, so tests/prometheus.rs can have a real one scrape /metrics.
# Unpacked from the .deb into target/tools rather than installed: the package would also
# register a service that listens on every interface. The test says it skipped that part
# when the binary cannot be had.
if ! command -v prometheus >/dev/null; then
  tools="$PWD/target/tools"
  if [[ ! -x "$tools/prometheus/usr/bin/prometheus" ]]; then
    sudo=""
    [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
    mkdir -p "$tools"
    ( cd "$tools" && { apt-get download prometheus 2>/dev/null || { $sudo apt-get update && apt-get download prometheus; }; } &&
      dpkg-deb -x prometheus_*.deb prometheus && rm -f prometheus_*.deb ) ||
      echo "prometheus could not be downloaded: tests/prometheus.rs will skip its scrape" >&2
  fi
  export PATH="$PATH:$tools/prometheus/usr/bin"
fi

echo "== unit and integration tests"
cargo test --release --locked --workspace

echo "== end-to-end tests in headless Chromium"
bash tests/e2e/run.sh
