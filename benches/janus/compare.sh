#!/usr/bin/env bash
# Runs the same load against Janus (videoroom) and Switchyard, one after the other, and
# prints the figures side by side with ratios.
#
#   sudo bash benches/janus/compare.sh [scenario] [duration-seconds] [extra switchyard-load args...]
#
# Janus (libnice) gathers no ICE candidates on `lo`, so everything runs in a network
# namespace of our own whose veth carries 127.0.0.2: both servers bind it, the load
# tester's participants too. Nothing leaves the namespace. Needs root (ip netns) and
# installs Debian's janus when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
scenario="${1:-livestream}"
duration="${2:-20}"
shift $(( $# > 2 ? 2 : $# ))

command -v janus >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y janus; }
cargo build --release --workspace --bins

ns="sybench-$$"
out=target/janus-compare
mkdir -p "$out"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip link add syv0 netns "$ns" type veth peer name syv1 netns "$ns"
ip netns exec "$ns" ip addr add 127.0.0.2/32 dev syv1
ip netns exec "$ns" ip link set syv0 up
ip netns exec "$ns" ip link set syv1 up

cfg="$out/janus-config"
bash benches/janus/janus-configs.sh "$(realpath -m "$cfg")"
ip netns exec "$ns" janus -F "$(realpath "$cfg")" -C "$(realpath "$cfg")/janus.jcfg" >"$out/janus.log" 2>&1 &
janus_pid=$!; pids+=("$janus_pid")
ip netns exec "$ns" target/release/switchyard --listen 127.0.0.2:8080 --media-ips 127.0.0.2 --udp-port 30000 --max-participants 1000 --max-connections-per-ip 0 >"$out/switchyard.log" 2>&1 &
switchyard_pid=$!; pids+=("$switchyard_pid")

# Both up within 20 s.
for _ in $(seq 1 40); do
  ip netns exec "$ns" bash -c 'exec 3<>/dev/tcp/127.0.0.2/8088 && exec 4<>/dev/tcp/127.0.0.2/8080' 2>/dev/null && break
  sleep 0.5
done

load() {
  ip netns exec "$ns" target/release/switchyard-load --media-ip 127.0.0.2 \
    --scenario "$scenario" --duration "$duration" --json "$@"
}
echo "== Janus" >&2
load --target janus --url http://127.0.0.2:8088/janus --server-pid "$janus_pid" "$@" >"$out/janus.json"
echo "== Switchyard" >&2
load --target switchyard --url http://127.0.0.2:8080 --server-pid "$switchyard_pid" "$@" >"$out/switchyard.json"

python3 - "$out/janus.json" "$out/switchyard.json" <<'PY'
import json, sys
j, s = (json.load(open(p)) for p in sys.argv[1:3])
rows = [
    ("forwarded packets/s", "forwarded_pps", "{:.0f}"),
    ("delivered packets/s (client count)", "delivered_pps", "{:.0f}"),
    ("delivery ratio", "delivery_ratio", "{:.4f}"),
    ("latency p50 ms", "latency_p50_ms", "{:.2f}"),
    ("latency p99 ms", "latency_p99_ms", "{:.2f}"),
    ("join -> first packet p50 ms", "join_to_first_packet_ms_p50", "{:.0f}"),
    ("server CPU us / forwarded packet", "server_cpu_us_per_packet", "{:.1f}"),
    ("server CPU % of a core", "server_cpu_percent", "{:.1f}"),
    ("server peak RSS MiB", "server_rss_mb", "{:.1f}"),
    ("load tester CPU % of a core", "load_cpu_percent", "{:.1f}"),
]
print(f"scenario {s['scenario']}: {s['participants']} participants, {s['forwarded_streams']} forwarded streams, {s['duration_s']:.0f} s each")
print(f"{'':36} {'Janus':>12} {'Switchyard':>12} {'Switchyard/Janus':>17}")
for label, key, fmt in rows:
    a, b = j.get(key), s.get(key)
    fa = fmt.format(a) if isinstance(a, (int, float)) else "n/a"
    fb = fmt.format(b) if isinstance(b, (int, float)) else "n/a"
    ratio = f"{b / a:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else "n/a"
    print(f"{label:36} {fa:>12} {fb:>12} {ratio:>17}")
PY
