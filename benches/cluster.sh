#!/usr/bin/env bash
# Throughput of one, two and three Switchyard nodes behind one Redis (issue 19), and
# what Redis is asked per join. Everything on loopback: redis-server on a free port
# without persistence, the nodes on the cores in NODE_CORES, the load tester on
# LOAD_CORES. Prints one JSON report per run, and Redis's command counts per join.
#
#   cargo build --release --workspace && benches/cluster.sh
#
# Bounded: every process started here is stopped (by PID) at the end of its run.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_CORES=${NODE_CORES:-0}
LOAD_CORES=${LOAD_CORES:-1}
ROOMS=${ROOMS:-6}
PER_ROOM=${PER_ROOM:-6}
KBPS=${KBPS:-1500}
DURATION=${DURATION:-10}
BIN=target/release/switchyard
LOAD=target/release/switchyard-load
OUT=${OUT:-/tmp/switchyard-cluster-bench}
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() {
  for _ in $(seq 100); do
    curl -sf "$1/healthz" >/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

# run NODES: start Redis and NODES nodes, load them, print the report, stop them all.
# NODES=0: one node without Redis (the baseline).
run() {
  local nodes=$1 redis_port pids=() urls=() cluster=()
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
  local redis_pid=$!
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  [ "$nodes" -gt 0 ] && cluster=(--redis "redis://127.0.0.1:$redis_port")
  for i in $(seq "$(( nodes > 0 ? nodes : 1 ))"); do
    local port
    port=$(free_port)
    taskset -c "$NODE_CORES" "$BIN" --listen "127.0.0.1:$port" --udp-port 0 \
      "${cluster[@]}" --node-id "n$i" \
      --max-participants 1000 --max-connections-per-ip 0 >"$OUT/node-$nodes-$i.log" 2>&1 &
    pids+=($!)
    urls+=("http://127.0.0.1:$port")
    wait_http "http://127.0.0.1:$port"
  done
  sleep 1.5 # every node registered
  redis-cli -p "$redis_port" config resetstat >/dev/null
  # Every command the nodes send during the run, to tell the join path from heartbeats.
  timeout $(( DURATION + 60 )) redis-cli -p "$redis_port" monitor >"$OUT/monitor-$nodes.txt" &
  local monitor_pid=$!
  local before
  before=$(date +%s.%N)
  local list
  list=$(IFS=,; echo "${urls[*]}")
  taskset -c "$LOAD_CORES" "$LOAD" --url "$list" --scenario meeting --rooms "$ROOMS" \
    --video-publishers "$PER_ROOM" --audio-publishers 0 --subscribers 0 \
    --video-kbps "$KBPS" --duration "$DURATION" --ramp 20 --json >"$OUT/report-$nodes.json" 2>"$OUT/load-$nodes.log"
  local after
  after=$(date +%s.%N)
  redis-cli -p "$redis_port" info commandstats >"$OUT/redis-$nodes.txt"
  kill "$monitor_pid" 2>/dev/null || true
  wait "$monitor_pid" 2>/dev/null || true
  for url in "${urls[@]}"; do
    curl -s "$url/api/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sys.argv[1], "forwarded", s.get("rtp_forwarded"), "cpu_s", s.get("process_cpu_seconds"))' "$url"
  done
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  python3 - "$OUT/report-$nodes.json" "$OUT/redis-$nodes.txt" "$nodes" "$before" "$after" "$OUT/monitor-$nodes.txt" <<'EOF'
import json, re, sys
report = json.load(open(sys.argv[1]))
calls = {}
for line in open(sys.argv[2]):
    m = re.match(r"cmdstat_(\w+):calls=(\d+),usec=(\d+)", line)
    if m:
        calls[m.group(1)] = (int(m.group(2)), int(m.group(3)))
nodes, secs = int(sys.argv[3]), float(sys.argv[5]) - float(sys.argv[4])
joins = report["participants"]
total = sum(c for c, _ in calls.values())
usec = sum(u for _, u in calls.values())
# The join path: every command but the registry writes (SET switchyard:node:*, SADD)
# and the lease scripts (renew, release), which heartbeats send once a second.
join_path = {}
for line in open(sys.argv[6]):
    if "lua]" in line:
        continue  # inside a lease script
    m = re.search(r'\] "(\w+)"(?: "([^"]*)")?', line)
    if not m:
        continue
    cmd, key = m.group(1).upper(), m.group(2) or ""
    if cmd in ("SADD", "EVALSHA", "EVAL", "SCRIPT", "INFO") or (cmd == "SET" and key.startswith("switchyard:node:")):
        continue
    name = cmd + " " + re.sub(r":[^:]*$", ":*", key) if key else cmd
    join_path[name] = join_path.get(name, 0) + 1
print(json.dumps({
    "nodes": nodes,
    "participants": joins,
    "forwarded_pps": round(report["forwarded_pps"]),
    "delivery": round(report["delivery_ratio"], 4),
    "server_cpu_percent": report["server_cpu_percent"] and round(report["server_cpu_percent"], 1),
    "cpu_us_per_packet": report["server_cpu_us_per_packet"] and round(report["server_cpu_us_per_packet"], 2),
    "join_to_first_packet_ms_p50": report["join_to_first_packet_ms_p50"],
    "redis_commands": {k: c for k, (c, _) in sorted(calls.items())},
    "redis_commands_total": total,
    "join_path_commands": join_path,
    "join_path_commands_per_join": joins and round(sum(join_path.values()) / joins, 2),
    "redis_usec_total": usec,
    "seconds": round(secs, 1),
}))
EOF
}

for n in ${NODE_COUNTS:-0 1 2 3}; do
  run "$n"
done
