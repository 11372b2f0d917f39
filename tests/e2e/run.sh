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

# Debian's chromium and firefox-esr (playwright-core and puppeteer-core never download a
# browser), and Node.js with npm to run the tests, from Debian's packages when missing.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v firefox-esr >/dev/null || missing+=(firefox-esr)
command -v npm >/dev/null || missing+=(nodejs npm)
# coturn: the TURN server turn.test.mjs relays a page through (on loopback only).
command -v turnserver >/dev/null || missing+=(coturn)
if (( ${#missing[@]} )); then
  sudo=""
  [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
  $sudo apt-get update
  # coturn's package would start a TURN service on every interface where an init system
  # runs it: service starts are refused during the install (policy-rc.d, the Debian way)
  # and the service is left disabled. The tests start turnserver themselves, on 127.0.0.1.
  policy=/usr/sbin/policy-rc.d
  made_policy=""
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
  if [[ -n "$made_policy" ]]; then $sudo rm -f "$policy"; fi
  if [[ " ${missing[*]} " == *" coturn "* ]] && command -v systemctl >/dev/null; then
    $sudo systemctl disable --now coturn >/dev/null 2>&1 || true
  fi
fi

cd "$here"
# (Re)install when node_modules is missing or older than the lock file (npm writes
# node_modules/.package-lock.json on every install).
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund
fi

# One file at a time: the machine is small and the tests share nothing but the binary.
# simulcast.test.mjs needs root (network namespaces, tc), as CI has.
node --test --test-concurrency=1 ./*.test.mjs
