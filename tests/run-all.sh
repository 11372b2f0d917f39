#!/usr/bin/env bash
# The one command that runs every test (README "Test"; .ci/run calls exactly this):
# unit tests of the pure core, integration tests with headless webrtc-rs clients against
# a real server on 127.0.0.1:0, and end-to-end tests in headless Chromium through the
# bundled web client. Installs what it needs (Chromium from Debian, playwright-core from
# npm) when missing. Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== build (release: the media tests measure real forwarding)"
cargo build --release --locked

echo "== unit and integration tests"
cargo test --release --locked

echo "== end-to-end tests in headless Chromium"
bash tests/e2e/run.sh
