// A seeded UDP impairment relay on loopback, for browsers that cannot be driven inside a
// network namespace (Firefox's automation talks WebSocket to the browser, on loopback).
// The server advertises the relay's address instead of its own (--advertise-ips); the
// relay gives each client flow a socket of its own towards the server, so the server
// still tells clients apart by source address, and drops a share of the datagrams of
// the flows it is told to, each way, with a seeded generator. Bounded: at most
// `maxFlows` flows, each forgotten after `idleMs` without traffic, all closed by close().

import dgram from 'node:dgram';

// mulberry32: a small seeded generator, so a run loses the same datagrams for a seed.
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Listens on `host`:`port` and forwards to `upstreamHost`:`port`. Resolves once bound.
export function startRelay({ host, port, upstreamHost, seed = 1, maxFlows = 64, idleMs = 60000 }) {
  const random = seeded(seed);
  const front = dgram.createSocket('udp4');
  const flows = new Map(); // "addr:port" of a client -> { socket, lossy share, last, counts }
  const counts = { forwarded: 0, dropped: 0, refusedFlows: 0, foreignSources: 0 };
  const lossByPort = new Map(); // client port, or the port of its flow's upstream socket -> share

  const flowOf = (rinfo) => {
    const key = `${rinfo.address}:${rinfo.port}`;
    let flow = flows.get(key);
    if (flow) return flow;
    if (flows.size >= maxFlows) {
      counts.refusedFlows++;
      return null;
    }
    const socket = dgram.createSocket('udp4');
    flow = { socket, last: Date.now(), client: rinfo };
    socket.on('message', (msg) => {
      flow.last = Date.now();
      if (drops(flow)) return;
      front.send(msg, rinfo.port, rinfo.address);
      counts.forwarded++;
    });
    socket.on('error', () => {});
    socket.bind(0, upstreamHost, () => { flow.upstreamPort = socket.address().port; });
    flows.set(key, flow);
    return flow;
  };
  const drops = (flow) => {
    const share = lossByPort.get(flow.client.port) ?? lossByPort.get(flow.upstreamPort) ?? 0;
    if (share > 0 && random() < share) {
      counts.dropped++;
      return true;
    }
    return false;
  };

  front.on('message', (msg, rinfo) => {
    // Loopback only, as the server itself serves loopback only: a browser also checks
    // from the machine's other addresses, which must not pass for loopback upstream.
    if (!rinfo.address.startsWith('127.')) {
      counts.foreignSources++;
      return;
    }
    const flow = flowOf(rinfo);
    if (!flow) return;
    flow.last = Date.now();
    if (drops(flow)) return;
    flow.socket.send(msg, port, upstreamHost);
    counts.forwarded++;
  });
  front.on('error', () => {});
  const sweep = setInterval(() => {
    for (const [key, flow] of flows) {
      if (Date.now() - flow.last > idleMs) {
        flow.socket.close();
        flows.delete(key);
      }
    }
  }, 1000);

  return new Promise((resolve, reject) => {
    front.once('error', reject);
    front.bind(port, host, () => resolve({
      // Drops `share` of the datagrams each way of the flow from client port `port`, or
      // of the flow whose upstream socket has that port (what the server, and so the
      // client's own peer-reflexive candidate, sees).
      setLoss(port, share) { lossByPort.set(port, share); },
      // No flow loses anything any more.
      clearLoss() { lossByPort.clear(); },
      stats() { return { ...counts, flows: flows.size }; },
      // The client addresses of the flows now open.
      clients() { return [...flows.keys()]; },
      close() {
        clearInterval(sweep);
        for (const flow of flows.values()) flow.socket.close();
        flows.clear();
        front.close();
      },
    }));
  });
}
