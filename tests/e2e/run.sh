#!/usr/bin/env bash
# Runs the browser end-to-end tests against an already built server
# (the caller runs `cargo build --release --workspace` first: the crowd test also needs
# switchyard-load; SWITCHYARD_BIN overrides the server's path).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export SWITCHYARD_BIN="${SWITCHYARD_BIN:-$repo/target/release/switchyard}"

if [[ ! -x "$SWITCHYARD_BIN" ]]; then
  echo "server binary not found: $SWITCHYARD_BIN (run 'cargo build --release --workspace' first)" >&2
  exit 1
fi

# The browsers, Node.js, coturn and openssl, from Debian's packages when missing.
bash "$repo/tests/install-deps.sh"

cd "$here"
# (Re)install when node_modules is missing or older than the lock file (npm writes
# node_modules/.package-lock.json on every install).
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund
fi

# One file at a time: the machine is small and the tests share nothing but the binary.
# simulcast.test.mjs needs root (network namespaces, tc), as CI has.
node --test --test-concurrency=1 ./*.test.mjs
