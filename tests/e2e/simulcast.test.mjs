// End-to-end: simulcast, bandwidth estimation, dynacast and active speakers with real
// headless Chromium. Three pages meet in one room; the server and two "fast" pages run in
// network namespace A, the "slow" page in namespace B, and tc limits what A sends to B
// (the slow page's downlink). Everything stays on 127.0.0.0/8 (see netns.mjs); every wait
// has a deadline. Needs root (network namespaces, tc).
//
// Figures (resolutions and frame rates before/during/after the limit, the recovery time,
// the small tile's layer, the speakers seen) go to stdout and target/e2e/simulcast-figures.json.
//
//   SWITCHYARD_BIN   server binary (default: target/release/switchyard)
//   CHROMIUM_PATH    browser binary (default: /usr/bin/chromium)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, inLoopbackNet, openChromiumPage, pageState, remoteVideoStats,
  sleep, startServer, stopServer, transportInfo, waitFor, within,
} from './harness.mjs';
import {
  ADDR_A, ADDR_B, createNamespacePair, fetchJsonIn, liftAtoB, limitAtoB, qdiscStats, removeNamespacePair,
  wrapperInNamespace,
} from './netns.mjs';

const ROOM = 'simulcast';
const FULL_WIDTH = 640; // the 'f' layer of the client's 640x480 capture
// The slow page's downlink during the limit. It must carry the floor the test asks for
// (both remote audio tracks and the lowest layer of both videos: the 'q' layers measure
// 130-170 kbit/s each at the server, audio ~20-25 each, ~350 in all), or the server rightly
// pauses a video (the allocator keeps audio and drops what does not fit); and it must stay
// well below two 'f' layers (~1 Mbit/s). 300 kbit/s is under that floor; at 500 the floor
// plus the server's 10 % headroom left no margin and a video was paused now and then.
const LIMIT = { rate: process.env.SIMULCAST_LIMIT_RATE ?? '600kbit', burst: '32kbit', latency: '200ms' };
// Big enough that each remote tile is wider than 640 CSS pixels, so the server owes every
// page the full layer while the network allows it.
const VIEWPORT = { width: 1920, height: 1080 };
// The server drops a speaker 1.5 s after their last voiced packet (room/speaker.rs HOLD),
// on its next allocation tick.
const SPEAKER_GRACE_MS = 3000;
const SERVER_LOG = path.join(E2E_OUT, 'simulcast-server.log');
const FIGURES_FILE = path.join(E2E_OUT, 'simulcast-figures.json');

let net; // the namespaces (netns.mjs)
let server; // { child, url, log }
let browserA; // Chromium in namespace A: the fast pages
let browserB; // Chromium in namespace B: the slow page
const figures = { limit: LIMIT, viewport: VIEWPORT };

const wrappers = []; // the generated launch scripts, removed at the end
const launchIn = (ns) => {
  wrappers.push(wrapperInNamespace(E2E_OUT, ns, CHROMIUM));
  return chromium.launch({ executablePath: wrappers.at(-1), headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
};

async function closeBrowser(browser) {
  if (!browser) return;
  await within(15000, browser.close().catch(() => {}));
}

before(async () => {
  net = createNamespacePair(); // throws a clear message when not root / no `ip netns`
  server = await startServer(`${ADDR_A}:0`, { prefix: ['ip', 'netns', 'exec', net.a], args: ['--media-ips', ADDR_A] });
  [browserA, browserB] = await Promise.all([launchIn(net.a), launchIn(net.b)]);
});

after(async () => {
  try {
    await Promise.all([closeBrowser(browserA), closeBrowser(browserB)]);
    await stopServer(server, SERVER_LOG);
  } finally {
    removeNamespacePair(net);
    for (const file of wrappers) rmSync(file, { force: true });
    mkdirSync(E2E_OUT, { recursive: true });
    writeFileSync(FIGURES_FILE, JSON.stringify(figures, null, 2) + '\n');
    console.log(`figures: ${FIGURES_FILE}`);
  }
});

// ---------- measuring ----------

// The server's counters and per-subscriber downlinks (/api/stats), read from namespace A.
const serverStats = () => fetchJsonIn(net.a, `${server.url}/api/stats`);

// One participant's downlink as the server sees it: its estimate, what it wants and what
// was allocated, and per leg the layer forwarded / chosen (0 = q, 1 = h, 2 = f).
async function serverDownlink(participantId) {
  const stats = await serverStats().catch((err) => ({ error: err.message }));
  const d = stats.shards?.flatMap((s) => s.downlinks ?? []).find((x) => x.participant_id === participantId);
  if (!d) return stats.error ? `(no server stats: ${stats.error})` : '(no downlink)';
  const kbps = (b) => (b == null ? '-' : Math.round(b / 1000));
  return `estimate ${kbps(d.estimate_bps)} kbps, wanted ${kbps(d.wanted_bps)}, allocated ${kbps(d.allocated_bps)}, ` +
    `legs ${d.legs.map(([t, fwd, chosen]) => `${t}:${fwd ?? '-'}/${chosen ?? '-'}`).join(' ')}`;
}

// Per page: its remote videos, keyed by the remote participant's name, with the frame
// width at the end of `ms` and the frames decoded meanwhile (as a rate).
// `typicalWidth`: the median of the widths seen once a second over the window. A
// bandwidth estimator probes: a layer may go up for a moment and come back, and one
// sample at the end would judge the moment, not the window.
async function sampleVideo(pages, ms) {
  const first = await Promise.all(pages.map((p) => remoteVideoStats(p.page)));
  const seen = new Map(); // `${page}/${participantId}` -> widths
  const steps = Math.max(1, Math.round(ms / 1000));
  for (let i = 0; i < steps; i++) {
    await sleep(ms / steps);
    const now = await Promise.all(pages.map((p) => remoteVideoStats(p.page)));
    pages.forEach((p, k) => now[k].forEach((s) => {
      const key = `${p.name}/${s.participantId}`;
      seen.set(key, [...(seen.get(key) ?? []), s.frameWidth]);
    }));
  }
  const last = await Promise.all(pages.map((p) => remoteVideoStats(p.page)));
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const out = {};
  pages.forEach((p, i) => {
    out[p.name] = {};
    for (const s of last[i]) {
      const s0 = first[i].find((x) => x.participantId === s.participantId && x.mid === s.mid);
      const frames = s0 ? s.framesDecoded - s0.framesDecoded : 0;
      const secs = s0 ? (s.at - s0.at) / 1000 : 1;
      const widths = seen.get(`${p.name}/${s.participantId}`) ?? [s.frameWidth];
      out[p.name][s.name] = {
        frameWidth: s.frameWidth, frameHeight: s.frameHeight, widthAtStart: s0?.frameWidth ?? null,
        widths, typicalWidth: median(widths),
        framesDecoded: frames, fps: Number((frames / secs).toFixed(1)),
        kbps: s0 ? Math.round(((s.bytesReceived - s0.bytesReceived) * 8) / secs / 1000) : null,
      };
    }
  });
  return out;
}

// Each published video's layers as the server receives them: "t4 q:140k h:360k f:1200k".
async function serverPublications() {
  const stats = await serverStats().catch(() => null);
  return (stats?.shards ?? []).flatMap((s) => s.publications ?? []).filter((p) => p.layers.length > 1)
    .map((p) => `${p.participant_id}/${p.track_id} ${p.layers.map(([rid, bps, , on]) =>
      `${rid}:${Math.round(bps / 1000)}k${on ? '' : '(paused)'}`).join(' ')}`).join('; ');
}

// Logs a sample with each page's downlink as the server sees it (kept in
// figures.serverDownlinks[label]).
async function logSample(label, sample, ids) {
  figures.serverDownlinks ??= {};
  figures.serverDownlinks[label] = { publications: await serverPublications() };
  const counters = await serverStats().catch(() => ({}));
  figures.serverDownlinks[label].retransmissions = {
    out: counters.retransmissions_out, suppressed: counters.retransmissions_suppressed,
  };
  console.log(`[${label}] server receives: ${figures.serverDownlinks[label].publications}; ` +
    `retransmissions so far: ${counters.retransmissions_out} sent, ${counters.retransmissions_suppressed} held back`);
  for (const [page, remotes] of Object.entries(sample)) {
    const parts = Object.entries(remotes).map(([name, r]) =>
      `${name} ${r.frameWidth}x${r.frameHeight} ${r.fps} fps (${r.framesDecoded} frames, ${r.kbps} kbps)`);
    const server = await serverDownlink(ids[page]);
    figures.serverDownlinks[label][page] = server;
    console.log(`[${label}] ${page} receives: ${parts.join('; ')}\n    server: ${server}`);
  }
}

// What each page's camera sender is doing, per simulcast layer (for the log: shows when
// the browser itself, not the server, lowered a resolution, e.g. for CPU).
const outboundVideo = (page) => page.evaluate(async () => {
  const pc = window.switchyard?.pc;
  if (!pc) return [];
  const out = [];
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.push({ rid: s.rid, active: s.active, frameWidth: s.frameWidth, framesPerSecond: s.framesPerSecond,
        targetBitrate: s.targetBitrate, qualityLimitationReason: s.qualityLimitationReason });
    }
  });
  return out.sort((a, b) => String(a.rid).localeCompare(String(b.rid)));
});

// Every remote video of `p` decodes frames of a width that `ok(width)` accepts, and its
// frame count rises over ~1.5 s. Resolves what it saw ("name:width:+frames:kbps"), or
// { ok: false, seen }. With `timeline`, each sample is also logged and kept there.
async function remotesAt(p, ok, count = 2, timeline = null) {
  const s0 = await remoteVideoStats(p.page);
  await sleep(1500);
  const s1 = await remoteVideoStats(p.page);
  const seen = [];
  const good = s1.filter((s) => {
    const prev = s0.find((x) => x.participantId === s.participantId && x.mid === s.mid);
    const frames = prev ? s.framesDecoded - prev.framesDecoded : 0;
    const kbps = prev ? Math.round(((s.bytesReceived - prev.bytesReceived) * 8) / (s.at - prev.at)) : 0;
    seen.push(`${s.name}:${s.frameWidth}:+${frames}:${kbps}kbps`);
    return frames > 0 && ok(s.frameWidth, s);
  });
  if (timeline) {
    const entry = { t: Date.now() - timeline.since, page: p.name, seen, server: await serverDownlink(timeline.participantId) };
    timeline.samples.push(entry);
    console.log(`  [${timeline.label} +${(entry.t / 1000).toFixed(1)} s] ${p.name} receives ${seen.join(', ')}; server: ${entry.server}`);
  }
  return good.length >= count ? seen : { ok: false, seen };
}

// ---------- the test ----------

test('a slow subscriber gets a lower layer and recovers; small tiles get small layers; muted pages never speak', { timeout: 240000 }, async () => {
  const open = (browser, name) => openChromiumPage(browser, server, `room=${ROOM}&name=${name}`, undefined, { viewport: VIEWPORT })
    .then((p) => Object.assign(p, { name }));
  const fast1 = await open(browserA, 'Fast1');
  const fast2 = await open(browserA, 'Fast2');
  const slow = await open(browserB, 'Slow');
  const pages = [fast1, fast2, slow];
  const fastPages = [fast1, fast2];

  // Every page is connected and shows both others.
  await Promise.all(pages.map((p) => waitFor(`${p.name}: connected with 2 remote tiles`, async () => {
    const s = await pageState(p.page);
    return s.state === 'connected' && s.remoteTiles === 2 ? s : { ok: false, ...s };
  }, 45000)));
  const ids = Object.fromEntries(await Promise.all(pages.map(async (p) =>
    [p.name, await p.page.evaluate(() => window.switchyard.participantId)])));
  console.log(`participants: ${JSON.stringify(ids)}`);
  // A page that lost its connection joins again under a new id, which would void every
  // figure after it: checked after each phase.
  const sameParticipants = async (phase) => {
    const now = Object.fromEntries(await Promise.all(pages.map(async (p) =>
      [p.name, await p.page.evaluate(() => window.switchyard.participantId)])));
    assert.deepEqual(now, ids, `a page joined again (connection lost) by the end of "${phase}"; see ${SERVER_LOG}`);
  };

  // Every selected candidate pair stays inside 127.0.0.0/8, and the slow page really
  // talks to the server across the veth pair.
  figures.ice = {};
  for (const p of pages) {
    const t = await waitFor(`${p.name}: a selected candidate pair`, async () => {
      const info = await transportInfo(p.page);
      return info?.local?.address && info?.remote?.address ? info : { ok: false, info };
    }, 15000);
    figures.ice[p.name] = `${t.local.address}:${t.local.port} -> ${t.remote.address}:${t.remote.port}`;
    console.log(`${p.name}: selected pair ${figures.ice[p.name]}`);
    assert.ok(inLoopbackNet(t.local.address) && inLoopbackNet(t.remote.address), `${p.name}: pair leaves 127/8: ${JSON.stringify(t)}`);
    assert.equal(t.remote.address, ADDR_A, `${p.name}: the server's candidate`);
  }
  assert.equal((await transportInfo(slow.page)).local.address, ADDR_B, 'the slow page sends from namespace B');

  // Active speakers: Fast2 mutes its microphone now. From SPEAKER_GRACE_MS later to the
  // end of the test every page's current speakers list (the server sends it when it
  // changes) is polled: Fast2 must never be in it nor its tile marked speaking, and each
  // page must see an unmuted participant (the fake microphones beep) as the dominant one.
  await fast2.page.click('#mic-button');
  const mutedAt = Date.now();
  const speakerPolls = Object.fromEntries(pages.map((p) => [p.name, { polls: 0, dominant: {}, violations: [] }]));
  let watching = true;
  const speakingWatch = (async () => {
    const deadline = Date.now() + 200000;
    while (watching && Date.now() < deadline) {
      await sleep(500);
      if (Date.now() < mutedAt + SPEAKER_GRACE_MS) continue;
      for (const p of pages) {
        const seen = await p.page.evaluate((id) => ({
          speakers: window.switchyard.speakers,
          marked: document.querySelector(`.tile[data-participant-id="${id}"]`)?.dataset.speaking === 'true',
        }), ids.Fast2).catch(() => null);
        if (!seen) continue;
        const polls = speakerPolls[p.name];
        polls.polls++;
        const first = seen.speakers[0] ?? '(nobody)';
        polls.dominant[first] = (polls.dominant[first] ?? 0) + 1;
        if (seen.marked || seen.speakers.includes(ids.Fast2)) {
          polls.violations.push({ at: Date.now() - mutedAt, speakers: seen.speakers, marked: seen.marked });
        }
      }
    }
  })();

  try {
    // ----- before the limit: everyone decodes everyone at the full layer -----
    const t0 = Date.now();
    try {
      await Promise.all(pages.map((p) => waitFor(`${p.name}: both remote videos at ${FULL_WIDTH} px`,
        () => remotesAt(p, (w) => w === FULL_WIDTH), 40000, 0)));
    } finally {
      figures.views = Object.fromEntries(await Promise.all(pages.map(async (p) => [p.name, await p.page.evaluate(() => window.switchyard.views())])));
      figures.sendersBefore = Object.fromEntries(await Promise.all(pages.map(async (p) => [p.name, await outboundVideo(p.page)])));
      console.log(`views sent: ${JSON.stringify(figures.views)}`);
      console.log(`senders: ${JSON.stringify(figures.sendersBefore)}`);
      console.log(`server receives: ${await serverPublications()}`);
      for (const p of pages) console.log(`server: ${p.name}'s downlink: ${await serverDownlink(ids[p.name])}`);
    }
    await sameParticipants('before the limit');
    figures.fullLayerAfterMs = Date.now() - t0;
    figures.before = await sampleVideo(pages, 4000);
    await logSample('before limit', figures.before, ids);

    // ----- the limit: the slow page drops to a lower layer and keeps decoding -----
    limitAtoB(net, LIMIT.rate, LIMIT.burst, LIMIT.latency);
    const limitedAt = Date.now();
    console.log(`limited ${net.a} -> ${net.b} to ${LIMIT.rate}`);
    figures.downswitchTimeline = { label: 'limited', since: limitedAt, participantId: ids.Slow, samples: [] };
    try {
      await waitFor(`Slow: both remote videos below ${FULL_WIDTH} px and decoding`,
        () => remotesAt(slow, (w) => w > 0 && w < FULL_WIDTH, 2, figures.downswitchTimeline), 30000, 0);
      figures.downswitchMs = Date.now() - limitedAt;
      figures.during = await sampleVideo(pages, 8000);
      figures.slowSendsDuring = await outboundVideo(slow.page);
    } finally {
      figures.qdiscDuring = qdiscStats(net);
      liftAtoB(net);
    }
    const liftedAt = Date.now();
    await logSample('during limit', figures.during, ids);
    await sameParticipants('during the limit');
    console.log(`[during limit] slow page switched down ${figures.downswitchMs} ms after the limit`);
    for (const [name, r] of Object.entries(figures.during.Slow)) {
      assert.ok(r.framesDecoded > 0, `Slow stopped decoding ${name} during the limit: ${JSON.stringify(r)}`);
      assert.ok(r.typicalWidth > 0 && r.typicalWidth < FULL_WIDTH,
        `Slow mostly receives ${name} at ${r.typicalWidth} px during the limit (${r.widths})`);
    }
    // What Slow itself publishes is not judged: the limit also delays and drops the
    // server's transport-cc feedback on Slow's upload (it travels A -> B), so Slow's own
    // Chromium lowers and pauses its upper layers now and then (figures.slowSendsDuring).
    console.log(`[during limit] Slow sends: ${JSON.stringify(figures.slowSendsDuring)}`);
    for (const p of fastPages) {
      for (const [name, r] of Object.entries(figures.during[p.name])) {
        assert.ok(r.framesDecoded > 0, `${p.name} stopped decoding ${name}`);
        if (name === 'Slow') continue;
        assert.equal(r.typicalWidth, FULL_WIDTH,
          `${p.name} mostly receives ${name} at ${r.typicalWidth} px while only Slow is limited (${r.widths})`);
        const slowSees = figures.during.Slow[name];
        if (slowSees) assert.ok(slowSees.typicalWidth < r.typicalWidth, `Slow sees ${name} no smaller than ${p.name} does`);
      }
    }

    // ----- lifted: the slow page climbs back to the full layer -----
    // Back means the full layer, or what the other fast page gets of that publisher when
    // it is at least the 'h' layer: on this small machine a publisher's Chromium scales
    // its top layer down under CPU load now and then (qualityLimitationReason 'cpu'),
    // and then no subscriber can get 640 px of it.
    figures.recoveryTimeline = { label: 'lifted', since: liftedAt, participantId: ids.Slow, samples: [] };
    await waitFor(`Slow: both remote videos back at ${FULL_WIDTH} px (or at what the fast pages get)`, async () => {
      const fastSee = new Map(); // publisher name -> width the other fast page decodes
      for (const p of fastPages) {
        for (const s of await remoteVideoStats(p.page)) if (s.name !== 'Slow') fastSee.set(s.name, s.frameWidth);
      }
      return remotesAt(slow, (w, s) => w === FULL_WIDTH || (w >= FULL_WIDTH / 2 && w === fastSee.get(s.name)),
        2, figures.recoveryTimeline);
    }, 60000, 0);
    figures.recoveryMs = Date.now() - liftedAt;
    console.log(`[after limit] slow page back at ${FULL_WIDTH} px ${figures.recoveryMs} ms after the limit was lifted`);
    figures.after = await sampleVideo(pages, 4000);
    await logSample('after limit', figures.after, ids);
    await sameParticipants('after the limit');

    // ----- a small tile gets a small layer -----
    // A 160x120 tile: the 'q' layer (160x120) is the one that fits it.
    assert.equal(await fast1.page.evaluate((id) => window.switchyard.setTileSize(id, 160, 120), ids.Fast2), true);
    const shrunkAt = Date.now();
    figures.smallTileTimeline = { label: 'small tile', since: shrunkAt, participantId: ids.Fast1, samples: [] };
    const small = await waitFor('Fast1: Fast2\'s 160x120 tile receives the 160 px layer and decodes it', async () => {
      const r = await remotesAt(fast1, () => true, 0, figures.smallTileTimeline);
      const fast2Video = (Array.isArray(r) ? r : r.seen).find((x) => x.startsWith('Fast2:'));
      const [, width, frames] = fast2Video?.match(/^Fast2:(\d+):\+(\d+)/) ?? [];
      return Number(width) === 160 && Number(frames) > 0 ? { width: Number(width), frames: Number(frames) } : { ok: false, fast2Video };
    }, 20000, 0);
    figures.smallTile = { tile: '160x120', frameWidth: small.width, switchMs: Date.now() - shrunkAt,
      view: (await fast1.page.evaluate(() => window.switchyard.views())).find((v) => v.width === 160) ?? null };
    console.log(`[small tile] Fast1 shows Fast2 in a 160x120 tile (view ${JSON.stringify(figures.smallTile.view)}): ` +
      `receives ${small.width} px wide frames within ${figures.smallTile.switchMs} ms`);
    await fast1.page.evaluate((id) => window.switchyard.setTileSize(id, 0, 0), ids.Fast2);
  } finally {
    watching = false;
    await speakingWatch;
  }

  // ----- active speakers -----
  await sameParticipants('the small tile');
  const histories = Object.fromEntries(await Promise.all(pages.map(async (p) =>
    [p.name, await p.page.evaluate(() => window.switchyard.speakerHistory())])));
  figures.speakers = { muted: 'Fast2', ids, graceMs: SPEAKER_GRACE_MS, polls: speakerPolls,
    messages: Object.fromEntries(Object.entries(histories).map(([n, h]) =>
      [n, h.map((e) => ({ t: e.at - mutedAt, ids: e.ids }))])) };
  for (const p of pages) {
    const polls = speakerPolls[p.name];
    console.log(`[speakers] ${p.name}: ${histories[p.name].length} speakers messages; over ${polls.polls} polls after Fast2 ` +
      `muted, the dominant speaker was ${JSON.stringify(polls.dominant)}; messages (ms after the mute): ` +
      JSON.stringify(figures.speakers.messages[p.name].slice(-8)));
  }
  for (const p of pages) {
    const polls = speakerPolls[p.name];
    assert.deepEqual(polls.violations, [], `${p.name} showed the muted Fast2 (${ids.Fast2}) speaking`);
    assert.ok((polls.dominant[ids.Fast1] ?? 0) + (polls.dominant[ids.Slow] ?? 0) > 0,
      `${p.name} never showed an unmuted participant as the dominant speaker: ${JSON.stringify(polls.dominant)}`);
  }

  const stats = await serverStats().catch(() => null);
  if (stats) {
    const { rtp_forwarded, dynacast_updates, probe_clusters, padding_packets_out, twcc_feedback_in } = stats;
    const layer_switches = (stats.shards ?? []).flatMap((s) => s.downlinks ?? [])
      .reduce((sum, d) => sum + (d.layer_switches ?? 0), 0);
    figures.server = { rtp_forwarded, layer_switches, dynacast_updates, probe_clusters, padding_packets_out, twcc_feedback_in };
    console.log(`server: ${JSON.stringify(figures.server)}`);
  }
  await Promise.all(pages.map((p) => within(10000, p.context.close().catch(() => {}))));
});
