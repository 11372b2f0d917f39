// Two network namespaces joined by a veth pair, all on 127.0.0.0/8, so a test can shape
// the traffic between a server (and browsers) in namespace A and a browser in namespace B
// with tc, without touching any real interface. Needs root and `ip netns`.
//
//   A: lo 127.0.0.1/32, veth 127.0.100.1/24  <----veth---->  B: lo 127.0.0.1/32, veth 127.0.100.2/24
//
// 127.0.100.0/24 is loopback space, so browsers treat pages and candidates there as
// local (a secure context; Chromium gathers them with --allow-loopback-in-peer-connection),
// but it only leaves a namespace when:
// - lo holds 127.0.0.1/32 instead of its automatic 127.0.0.1/8, whose local route would
//   capture the whole of 127/8, and
// - route_localnet=1 (all, default and the veth), without which the kernel drops
//   127/8 packets on a non-loopback interface as martians.

import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const ADDR_A = '127.0.100.1';
export const ADDR_B = '127.0.100.2';

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10000 }).toString();

// Throws a clear error unless this process can make namespaces and shape traffic.
export function requireNetnsSupport() {
  if (process.getuid?.() !== 0) {
    throw new Error('this test needs root: it creates network namespaces and shapes traffic with tc (CI runs as root)');
  }
  for (const [cmd, args] of [['ip', ['netns', 'list']], ['tc', ['-V']]]) {
    const r = spawnSync(cmd, args, { timeout: 10000 });
    if (r.error || r.status !== 0) {
      throw new Error(`\`${cmd} ${args.join(' ')}\` failed (${r.error?.message ?? String(r.stderr).trim()}): ` +
        'this test needs iproute2 with network namespace and tc support');
    }
  }
}

// Namespaces a previous run left behind when it was killed (its PID no longer runs).
function removeStaleNamespaces() {
  let names = [];
  try { names = ip('netns', 'list').split('\n').map((l) => l.split(' ')[0]); } catch { return; }
  for (const name of names) {
    const m = name.match(/^swy-[ab]-(\d+)$/);
    if (m && !existsSync(`/proc/${m[1]}`)) spawnSync('ip', ['netns', 'del', name], { timeout: 10000 });
  }
}

const created = new Set(); // namespace names this process made and has not deleted yet
process.on('exit', () => {
  for (const name of created) spawnSync('ip', ['netns', 'del', name], { timeout: 10000 });
});
// A runner stopped with Ctrl-C or a kill would otherwise skip the 'exit' handlers (the
// harness's, which kill the server by PID, and the one above).
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => process.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 })[sig]));
}

// Creates the pair of namespaces, named after this process so parallel runs do not
// collide. Returns { a, b, vethA, vethB } (namespace and veth names).
export function createNamespacePair() {
  requireNetnsSupport();
  removeStaleNamespaces();
  const id = process.pid;
  const net = { a: `swy-a-${id}`, b: `swy-b-${id}`, vethA: `swya${id}`, vethB: `swyb${id}` };
  const inNs = (ns, ...args) => ip('netns', 'exec', ns, ...args);
  try {
    for (const ns of [net.a, net.b]) { ip('netns', 'add', ns); created.add(ns); }
    ip('link', 'add', net.vethA, 'netns', net.a, 'type', 'veth', 'peer', 'name', net.vethB, 'netns', net.b);
    for (const [ns, veth, addr] of [[net.a, net.vethA, ADDR_A], [net.b, net.vethB, ADDR_B]]) {
      for (const dev of ['all', 'default', veth]) inNs(ns, 'sysctl', '-qw', `net.ipv4.conf.${dev}.route_localnet=1`);
      inNs(ns, 'ip', 'link', 'set', 'lo', 'up');
      inNs(ns, 'ip', 'addr', 'del', '127.0.0.1/8', 'dev', 'lo');
      inNs(ns, 'ip', 'addr', 'add', '127.0.0.1/32', 'dev', 'lo');
      inNs(ns, 'ip', 'addr', 'add', `${addr}/24`, 'dev', veth);
      inNs(ns, 'ip', 'link', 'set', veth, 'up');
    }
  } catch (err) {
    removeNamespacePair(net);
    throw new Error(`setting up network namespaces failed: ${err.stderr?.toString().trim() || err.message}`);
  }
  return net;
}

// Deletes both namespaces (the veth pair goes with them). Processes still inside keep
// theirs alive until they exit, so stop them first.
export function removeNamespacePair(net) {
  for (const ns of [net?.a, net?.b]) {
    if (!ns || !created.has(ns)) continue;
    spawnSync('ip', ['netns', 'del', ns], { timeout: 10000 });
    created.delete(ns);
  }
}

// A script that runs `binary` inside `ns` with the caller's arguments; the exec chain
// keeps one PID and the inherited pipes, so playwright drives it like the browser itself.
export function wrapperInNamespace(dir, ns, binary) {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${path.basename(binary)}-in-${ns}.sh`);
  writeFileSync(file, `#!/bin/sh\nexec ip netns exec '${ns}' '${binary}' "$@"\n`);
  chmodSync(file, 0o755);
  return file;
}

// Limits what leaves namespace A towards B (the slow side's downlink) with a token bucket.
export function limitAtoB(net, rate = '300kbit', burst = '32kbit', latency = '200ms') {
  ip('netns', 'exec', net.a, 'tc', 'qdisc', 'replace', 'dev', net.vethA, 'root', 'tbf',
    'rate', rate, 'burst', burst, 'latency', latency);
}

export function liftAtoB(net) {
  ip('netns', 'exec', net.a, 'tc', 'qdisc', 'del', 'dev', net.vethA, 'root');
}

// The qdisc's own counters (sent bytes, drops), for the log.
export function qdiscStats(net) {
  try { return ip('netns', 'exec', net.a, 'tc', '-s', 'qdisc', 'show', 'dev', net.vethA).trim(); } catch (err) { return String(err.message); }
}

// GET `url` from inside `ns` (where a server in that namespace can be reached) and parse
// the JSON; 20 s at most. Most of that is a fresh node starting in the namespace: on a
// loaded CI machine, beside two browsers, 5 s was once not enough.
export function fetchJsonIn(ns, url) {
  const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(15000) })
    .then((r) => r.text()).then((t) => process.stdout.write(t), (e) => { console.error(String(e)); process.exit(1); })`;
  return new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', ns, process.execPath, '-e', script], { timeout: 20000, maxBuffer: 8 << 20 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`GET ${url} in ${ns}: ${stderr || err.message}`));
        try { resolve(JSON.parse(stdout)); } catch (e) { reject(new Error(`GET ${url} in ${ns}: ${e.message}`)); }
      });
  });
}

// Drops every UDP datagram leaving either namespace over the veth (the media path), while
// TCP (the page, the signaling WebSocket) goes on: an htb root whose UDP class ends in a
// blackhole qdisc, classified by u32 (no iptables or nftables needed).
export function blockUdp(net) {
  for (const [ns, veth] of [[net.a, net.vethA], [net.b, net.vethB]]) {
    const tc = (...args) => ip('netns', 'exec', ns, 'tc', ...args);
    tc('qdisc', 'replace', 'dev', veth, 'root', 'handle', '1:', 'htb', 'default', '1', 'r2q', '100000');
    tc('class', 'add', 'dev', veth, 'parent', '1:', 'classid', '1:1', 'htb', 'rate', '10gbit');
    tc('class', 'add', 'dev', veth, 'parent', '1:', 'classid', '1:2', 'htb', 'rate', '10gbit');
    tc('qdisc', 'add', 'dev', veth, 'parent', '1:2', 'handle', '20:', 'blackhole');
    tc('filter', 'add', 'dev', veth, 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32',
      'match', 'ip', 'protocol', '17', '0xff', 'flowid', '1:2');
  }
}

export function unblockUdp(net) {
  for (const [ns, veth] of [[net.a, net.vethA], [net.b, net.vethB]]) {
    ip('netns', 'exec', ns, 'tc', 'qdisc', 'del', 'dev', veth, 'root');
  }
}

