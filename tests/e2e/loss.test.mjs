// End-to-end: a participant on a lossy link (Wi-Fi, mobile) in real headless Chromium.
// Three pages meet; every page's media passes a seeded UDP relay on loopback (relay.mjs:
// the server advertises the relay's address, the relay gives each page's flow a socket
// of its own towards the server), and the relay drops a random share of the lossy
// page's datagrams each way. For 0 %, 5 % and 15 % loss it measures, from getStats,
// what every page decodes of every other page's camera against what that camera sent,
// the longest stall, NACKs and PLIs, the server's downlink estimate for the lossy page,
// and the loss the server's transport-cc feedback reported to it about its uplink; then
// how long full quality takes to come back once the loss stops. Figures go to stdout
// and target/e2e/loss-figures.json.
//
// (An earlier version dropped datagrams with a tc u32 filter on one byte 64 bytes into
// each datagram, in network namespaces. For Chromium's own packets that byte often lies
// in the RTP header extensions, not the encrypted payload: the nominal 5 % dropped about
// a third of its video, as the server's feedback to it showed, and its uplink estimate
// collapsed. The relay's losses are drawn by a seeded generator, whatever the bytes.)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, openChromiumPage, serverStats, sleep, startServer, stopServer, transportInfo,
  waitConnected, waitFor, within,
} from './harness.mjs';
import { startRelay } from './relay.mjs';

const ROOM = 'lossy';
const VIEWPORT = { width: 1920, height: 1080 }; // tiles wider than 640: the full layer is owed
const WINDOW_MS = 15000; // measured per loss level
const SAMPLE_MS = 200; // stall resolution
const SERVER_LOG = path.join(E2E_OUT, 'loss-server.log');
const FIGURES_FILE = path.join(E2E_OUT, 'loss-figures.json');

const RELAY_IP = '127.0.0.3';

let server;
let relay;
let browser;
const figures = { levels: {} };

before(async () => {
  server = await startServer('127.0.0.1:0', { args: ['--advertise-ips', RELAY_IP] });
  const port = Number((await serverStats(server)).shards[0].udp_addr.split(':').pop());
  relay = await startRelay({ host: RELAY_IP, port, upstreamHost: '127.0.0.1', seed: 16 });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
});

after(async () => {
  try {
    await within(15000, browser?.close().catch(() => {}));
    relay?.close();
    await stopServer(server, SERVER_LOG);
  } finally {
    mkdirSync(E2E_OUT, { recursive: true });
    writeFileSync(FIGURES_FILE, JSON.stringify(figures, null, 2) + '\n');
    console.log(`figures: ${FIGURES_FILE}`);
  }
});

// Per remote tile of `page`: whose it is and its receiver's inbound-rtp counters.
const received = (page) => page.evaluate(async () => {
  const pc = window.switchyard?.pc;
  const out = {};
  if (!pc) return out;
  for (const el of document.querySelectorAll('.tile.remote')) {
    const track = el.querySelector('video')?.srcObject?.getVideoTracks()[0];
    const t = track && pc.getTransceivers().find((x) => x.receiver.track === track);
    if (!t) continue;
    let s = null;
    (await t.receiver.getStats()).forEach((r) => { if (r.type === 'inbound-rtp') s = r; });
    if (s) {
      out[el.dataset.participantId] = { frames: s.framesDecoded ?? 0, width: s.frameWidth ?? 0,
        nacks: s.nackCount ?? 0, plis: s.pliCount ?? 0, lost: s.packetsLost ?? 0, packets: s.packetsReceived ?? 0 };
    }
  }
  return out;
});

// What `page`'s camera sent: the most frames of any of its simulcast layers (each layer
// carries every frame of the capture).
const framesSent = (page) => page.evaluate(async () => {
  let most = 0;
  const pc = window.switchyard?.pc;
  if (!pc) return 0; // reconnecting: the identity check after the window says so
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') most = Math.max(most, s.framesSent ?? 0);
  });
  return most;
});

// What `page`'s camera sends per simulcast layer, and why the browser holds it back.
const outbound = (page) => page.evaluate(async () => {
  const out = [];
  (await window.switchyard?.pc?.getStats())?.forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.push(`${s.rid}:${s.frameWidth ?? 0}w:${Math.round(s.framesPerSecond ?? 0)}fps:` +
        `${Math.round((s.targetBitrate ?? 0) / 1000)}k:${s.qualityLimitationReason}:nacks ${s.nackCount}`);
    }
  });
  return out.sort().join(' ');
});

// The server's forwarding counters that tell what it did in a window.
const COUNTERS = ['rtp_forwarded', 'layer_switches', 'keyframe_requests_from_subscribers', 'keyframe_requests_to_publishers', 'retransmissions_out', 'retransmissions_suppressed', 'retransmissions_over_budget',
  'rtp_replayed_after_keyframe', 'probe_clusters'];
const serverCounters = async () => {
  const stats = await serverStats(server).catch(() => ({}));
  return Object.fromEntries(COUNTERS.filter((k) => k in stats).map((k) => [k, stats[k]]));
};
const counterDelta = (a, b) => Object.fromEntries(Object.keys(b).map((k) => [k, b[k] - (a[k] ?? 0)]));

const downlink = async (id) => {
  const stats = await serverStats(server).catch(() => null);
  return stats?.shards?.flatMap((s) => s.downlinks ?? []).find((d) => d.participant_id === id) ?? null;
};

// One measuring window: per (receiver, sender) pair, frames decoded against frames sent,
// the longest time without a new decoded frame, and NACKs, PLIs and loss meanwhile.
async function measure(pages, ids, ms) {
  const names = Object.fromEntries(Object.entries(ids).map(([name, id]) => [id, name]));
  const sent0 = await Promise.all(pages.map((p) => framesSent(p.page)));
  const first = await Promise.all(pages.map((p) => received(p.page)));
  const last = first.map((r) => Object.fromEntries(Object.entries(r).map(([id, s]) => [id, { frames: s.frames, at: Date.now() }])));
  const stall = first.map(() => ({}));
  const stallEnd = first.map(() => ({})); // when the longest stall ended (ISO time)
  const start = Date.now();
  let samples = 0;
  while (Date.now() - start < ms && samples < ms / SAMPLE_MS * 2) {
    samples++;
    await sleep(SAMPLE_MS);
    const now = await Promise.all(pages.map((p) => received(p.page)));
    now.forEach((r, i) => Object.entries(r).forEach(([id, s]) => {
      const l = last[i][id] ?? { frames: s.frames, at: start };
      if (s.frames > l.frames) last[i][id] = { frames: s.frames, at: Date.now() };
      const gap = Date.now() - last[i][id].at;
      if (gap > (stall[i][id] ?? 0)) stallEnd[i][id] = new Date().toISOString();
      stall[i][id] = Math.max(stall[i][id] ?? 0, gap);
    }));
  }
  const sent1 = await Promise.all(pages.map((p) => framesSent(p.page)));
  const end = await Promise.all(pages.map((p) => received(p.page)));
  const out = {};
  pages.forEach((p, i) => {
    for (const [id, s] of Object.entries(end[i])) {
      const from = pages.findIndex((q) => ids[q.name] === id);
      const s0 = first[i][id];
      if (from < 0 || !s0) continue;
      const source = sent1[from] - sent0[from];
      out[`${p.name}<-${names[id]}`] = {
        decoded: s.frames - s0.frames, source, share: Number(((s.frames - s0.frames) / Math.max(1, source)).toFixed(3)),
        longestStallMs: stall[i][id] ?? null, longestStallSeenAt: stallEnd[i][id] ?? null, width: s.width,
        nacks: s.nacks - s0.nacks, plis: s.plis - s0.plis,
        lossPct: Number((100 * (s.lost - s0.lost) / Math.max(1, s.packets - s0.packets + s.lost - s0.lost)).toFixed(1)),
      };
    }
  });
  return out;
}

test('random loss is not congestion: a lossy participant keeps its estimate and its layers, receives at 5 % loss, and gets full quality back when loss stops', { timeout: 300000 }, async () => {
  const open = async (name) => Object.assign(await openChromiumPage(browser, server, `room=${ROOM}&name=${name}`,
    undefined, { viewport: VIEWPORT }), { name });
  const pages = [await open('Ada'), await open('Bob'), await open('Lou')];
  await Promise.all(pages.map((p) => waitConnected(p, 2, 45000)));
  // Lou's flow through the relay: its selected pair's local end is what the server saw,
  // the relay's upstream socket for that flow (a peer-reflexive candidate).
  const louPair = await transportInfo(pages[2].page);
  assert.equal(louPair.remote?.address, RELAY_IP, `Lou reaches the relay: ${JSON.stringify(louPair)}`);
  // The page may restart ICE (its own check of the media path), which moves it to a
  // new flow: each level finds the flow again, and says when it moved mid-window.
  const louFlow = async () => (await transportInfo(pages[2].page))?.local?.port;
  const feedbackToLou = async () => (await downlink(ids.Lou))?.uplink_feedback ?? [0, 0];
  const ids = Object.fromEntries(await Promise.all(pages.map(async (p) =>
    [p.name, await p.page.evaluate(() => window.switchyard.participantId)])));
  // Full quality everywhere first (the tiles are large): both others at 640 wide.
  const allFull = async () => {
    const r = await Promise.all(pages.map((p) => received(p.page)));
    return r.every((x) => Object.values(x).length === 2 && Object.values(x).every((s) => s.width >= 640)) || { ok: false, r };
  };
  await waitFor('every page receives both others at full size', allFull, 45000);

  let cleanEstimate = null;
  for (const share of [0, 0.05, 0.15]) {
    relay.clearLoss();
    const flow = await louFlow();
    relay.setLoss(flow, share);
    await sleep(3000); // let the estimator and the receivers see it
    let [told0, dropped0, server0] = [await feedbackToLou(), relay.stats().dropped, await serverCounters()];
    let pairs = await measure(pages, ids, WINDOW_MS);
    // Ada and Bob are the control: nothing stands between them and the server. When one
    // of them decodes under 10 frames/s of the other, the machine starved a browser
    // (seen once in CI at 0 %: 8.3 frames/s with no loss anywhere), which says nothing of
    // Lou's link: the window is measured again, once, and both are printed.
    const starved = Object.entries(pairs).filter(([pair, f]) => !pair.includes('Lou') && f.decoded / (WINDOW_MS / 1000) < 10);
    if (starved.length) {
      console.log(`  SKIPPED WINDOW at ${share * 100} %: a control pair starved (${JSON.stringify(starved)}, server ` +
        `${JSON.stringify(counterDelta(server0, await serverCounters()))}); measuring again`);
      [told0, dropped0, server0] = [await feedbackToLou(), relay.stats().dropped, await serverCounters()];
      pairs = await measure(pages, ids, WINDOW_MS);
    }
    const [told1, dropped1] = [await feedbackToLou(), relay.stats().dropped];
    const serverDelta = counterDelta(server0, await serverCounters());
    if ((await louFlow()) !== flow) console.log(`  (Lou restarted ICE during the window: the rest of it was lossless)`);
    const lou = await downlink(ids.Lou);
    const toldLost = told1[1] - told0[1];
    const level = { pairs, relayDropped: dropped1 - dropped0, louDownlink: lou && { estimateKbps: Math.round((lou.estimate_bps ?? 0) / 1000),
      lossPct: Number((100 * lou.loss).toFixed(1)), inherentLossPct: Number((100 * lou.inherent_loss).toFixed(1)),
      legs: lou.legs },
      louUplinkLossToldPct: Number((100 * toldLost / Math.max(1, told1[0] - told0[0] + toldLost)).toFixed(1)) };
    figures.levels[`${share * 100}%`] = level;
    console.log(`--- ${share * 100} % random loss each way on Lou's link`);
    for (const [pair, f] of Object.entries(pairs)) {
      console.log(`  ${pair}: ${f.decoded}/${f.source} frames (${(f.share * 100).toFixed(0)} %), ` +
        `longest stall ${f.longestStallMs} ms${f.longestStallMs >= 1000 ? ` (until ${f.longestStallSeenAt})` : ''}, ${f.width} wide, NACKs ${f.nacks}, PLIs ${f.plis}, loss ${f.lossPct} %`);
    }
    console.log(`  server's view of Lou's downlink: ${JSON.stringify(level.louDownlink)}; the relay dropped ${level.relayDropped} of Lou's datagrams`);
    console.log(`  the server's transport-cc feedback told Lou of ${level.louUplinkLossToldPct} % loss on its uplink`);
    console.log(`  server, this window: ${JSON.stringify(serverDelta)}`);
    level.louSends = await outbound(pages[2].page);
    level.louUplinkEstimateKbps = await pages[2].page.evaluate(async () => {
      let bps = 0;
      (await window.switchyard.pc.getStats()).forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated) bps = Math.max(bps, s.availableOutgoingBitrate ?? 0);
      });
      return Math.round(bps / 1000);
    });
    console.log(`  Lou sends ${level.louSends}; its own uplink estimate ${level.louUplinkEstimateKbps} kbps`);
    const now = Object.fromEntries(await Promise.all(pages.map(async (p) =>
      [p.name, await p.page.evaluate(() => window.switchyard.participantId)])));
    assert.deepEqual(now, ids, `a page lost its connection and joined again at ${share * 100} % loss`);
    // What is asserted is what the server decides; the share of frames decoded and the
    // longest stall are reported, not asserted: on a 2-core machine running two browsers
    // and three 3-layer encoders, a page stalls for seconds now and then even without
    // loss (seen: 73 % of frames, a 2.8 s stall, at 0 %), which would fail a >= 95 %
    // check for reasons that are not the network's.
    const estimate = lou?.estimate_bps ?? 0;
    if (share === 0) cleanEstimate = estimate;
    else {
      // Up to 10 % loss holds the estimate (libwebrtc's classic rule); above it, it may
      // come down, as libwebrtc's does, but never so far that a leg is paused.
      const floor = share <= 0.1 ? 0.7 : 0.3;
      assert.ok(estimate >= floor * cleanEstimate,
        `random loss is not congestion: Lou's estimate ${estimate} at ${share * 100} % vs ${cleanEstimate} without loss`);
      assert.ok(lou.legs.every(([, forwarded]) => forwarded != null),
        `no leg of Lou's is paused at ${share * 100} %: ${JSON.stringify(lou.legs)}`);
    }
    if (share > 0) {
      assert.ok(level.relayDropped > 50, `the relay dropped Lou's datagrams: ${level.relayDropped}`);
      // The feedback tells Lou of the loss there is, not more (what its own uplink
      // estimate is fed; in the u32-filter days it read three times the nominal share).
      assert.ok(level.louUplinkLossToldPct <= 2 * share * 100 + 2,
        `the feedback told Lou of ${level.louUplinkLossToldPct} % loss at ${share * 100} %`);
    }
    // At every level every pair keeps moving (>= 10 of 20 frames/s; a lower layer is
    // fine), Lou's camera included. Until a leg's VP8 picture numbers were carried across
    // layer switches, a switch at 15 % froze a receiver for 3 s and this was reported
    // only (docs/RTCP.md); since, the pairs with Lou read 76-96 % in five runs.
    for (const [pair, f] of Object.entries(pairs)) {
      const fps = f.decoded / (WINDOW_MS / 1000);
      assert.ok(fps >= 10, `${pair} at ${share * 100} %: ${fps.toFixed(1)} frames/s`);
    }
  }

  // Loss stops: Lou receives both others at full size within 5 s (asserted); how long
  // until everyone receives Lou at full size again is reported (bounded at 30 s).
  relay.clearLoss();
  const t0 = Date.now();
  const louFull = async () => {
    const r = await received(pages[2].page);
    return (Object.values(r).length === 2 && Object.values(r).every((x) => x.width >= 640)) || { ok: false, r };
  };
  await waitFor('Lou receives both others at full size within 5 s of the loss stopping', louFull, 5000, 100);
  figures.louDownlinkRecoveryMs = Date.now() - t0;
  figures.everyoneRecoveryMs = await waitFor('everyone at full size', allFull, 30000, 250)
    .then(() => Date.now() - t0, () => null);
  console.log(`after the loss stopped: Lou receives full size in ${figures.louDownlinkRecoveryMs} ms, ` +
    `everyone in ${figures.everyoneRecoveryMs ?? '> 30000'} ms`);
});
