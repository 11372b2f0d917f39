#!/usr/bin/env bash
# Installs from Debian's packages what the tests need and this machine lacks; does
# nothing when all is there. tests/run-all.sh runs it before any test (tests/turn.rs
# needs coturn's client), tests/e2e/run.sh again before the browser tests.
set -euo pipefail

# Debian's chromium and firefox-esr (playwright-core and puppeteer-core never download a
# browser), and Node.js with npm to run the tests, from Debian's packages when missing.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v firefox-esr >/dev/null || missing+=(firefox-esr)
command -v npm >/dev/null || missing+=(nodejs npm)
# coturn: turn.test.mjs's TURN server, and the client (turnutils_uclient) tests/turn.rs
# drives against the embedded one; all on loopback only.
command -v turnserver >/dev/null || missing+=(coturn)
# openssl: turn-embedded.test.mjs makes its TLS certificate with it.
command -v openssl >/dev/null || missing+=(openssl)
# redis-server: the cluster tests (tests/cluster.rs) start their own, on loopback.
command -v redis-server >/dev/null || missing+=(redis-server)
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
  if command -v systemctl >/dev/null; then
    for service in coturn redis-server; do
      if [[ " ${missing[*]} " == *" $service "* ]]; then
        $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
      fi
    done
  fi
fi

