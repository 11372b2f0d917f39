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
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, inLoopbackNet, openChromiumPage, pageState, remoteVideoStats, serverStats,
  sleep, startServer, stopServer, transportInfo, waitFor, within,
} from './harness.mjs';
import {
  ADDR_A, ADDR_B, createNamespacePair, liftAtoB, limitAtoB, qdiscStats, removeNamespacePair, wrapperInNamespace,
} from './netns.mjs';

const ROOM = 'simulcast';
const FULL_WIDTH = 640; // the 'f' layer of the client's 640x480 capture
const LIMIT = { rate: '300kbit', burst: '32kbit', latency: '200ms' };
// Big enough that each remote tile is wider than 640 CSS pixels, so the server owes every
// page the full layer while the network allows it.
const VIEWPORT = { width: 1920, height: 1080 };
const SERVER_LOG = path.join(E2E_OUT, 'simulcast-server.log');
const FIGURES_FILE = path.join(E2E_OUT, 'simulcast-figures.json');

let net; // the namespaces (netns.mjs)
let server; // { child, url, log }
let browserA; // Chromium in namespace A: the fast pages
let browserB; // Chromium in namespace B: the slow page
const figures = { limit: LIMIT, viewport: VIEWPORT };

const launchIn = (ns) => chromium.launch({
  executablePath: wrapperInNamespace(E2E_OUT, ns, CHROMIUM),
  headless: true,
  args: CHROMIUM_ARGS,
  timeout: 30000,
});

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
    mkdirSync(E2E_OUT, { recursive: true });
    writeFileSync(FIGURES_FILE, JSON.stringify(figures, null, 2) + '\n');
    console.log(`figures: ${FIGURES_FILE}`);
  }
});

// ---------- measuring ----------

// Per page: its remote videos, keyed by the remote participant's name, with the frame
// width at the end of `ms` and the frames decoded meanwhile (as a rate).
async function sampleVideo(pages, ms) {
  const first = await Promise.all(pages.map((p) => remoteVideoStats(p.page)));
  await sleep(ms);
  const last = await Promise.all(pages.map((p) => remoteVideoStats(p.page)));
  const out = {};
  pages.forEach((p, i) => {
    out[p.name] = {};
    for (const s of last[i]) {
      const s0 = first[i].find((x) => x.participantId === s.participantId && x.mid === s.mid);
      const frames = s0 ? s.framesDecoded - s0.framesDecoded : 0;
      const secs = s0 ? (s.at - s0.at) / 1000 : 1;
      out[p.name][s.name] = {
        frameWidth: s.frameWidth, frameHeight: s.frameHeight, widthAtStart: s0?.frameWidth ?? null,
        framesDecoded: frames, fps: Number((frames / secs).toFixed(1)),
        kbps: s0 ? Math.round(((s.bytesReceived - s0.bytesReceived) * 8) / secs / 1000) : null,
      };
    }
  });
  return out;
}

function logSample(label, sample) {
  for (const [page, remotes] of Object.entries(sample)) {
    const parts = Object.entries(remotes).map(([name, r]) =>
      `${name} ${r.frameWidth}x${r.frameHeight} ${r.fps} fps (${r.framesDecoded} frames, ${r.kbps} kbps)`);
    console.log(`[${label}] ${page} receives: ${parts.join('; ')}`);
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
// frame count rises over ~1.5 s. Resolves the stats seen, or { ok: false, ... }.
async function remotesAt(p, ok, count = 2) {
  const s0 = await remoteVideoStats(p.page);
  await sleep(1500);
  const s1 = await remoteVideoStats(p.page);
  const good = s1.filter((s) => {
    const prev = s0.find((x) => x.participantId === s.participantId && x.mid === s.mid);
    return prev && s.framesDecoded > prev.framesDecoded && ok(s.frameWidth);
  });
  const seen = s1.map((s) => `${s.name}:${s.frameWidth}`);
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

  // Active speakers: Fast2 mutes its microphone now; the speakers seen from a few
  // seconds later to the end of the test are checked at the end.
  await fast2.page.click('#mic-button');
  const mutedAt = Date.now();
  const speakingViolations = [];
  let watching = true;
  const speakingWatch = (async () => {
    const deadline = Date.now() + 200000;
    while (watching && Date.now() < deadline) {
      await sleep(500);
      if (Date.now() < mutedAt + 3000) continue;
      for (const p of pages) {
        const speaking = await p.page.evaluate((id) =>
          document.querySelector(`.tile[data-participant-id="${id}"]`)?.dataset.speaking === 'true', ids.Fast2).catch(() => false);
        if (speaking) speakingViolations.push({ page: p.name, at: Date.now() - mutedAt });
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
    }
    figures.fullLayerAfterMs = Date.now() - t0;
    figures.before = await sampleVideo(pages, 4000);
    logSample('before limit', figures.before);

    // ----- the limit: the slow page drops to a lower layer and keeps decoding -----
    limitAtoB(net, LIMIT.rate, LIMIT.burst, LIMIT.latency);
    const limitedAt = Date.now();
    console.log(`limited ${net.a} -> ${net.b} to ${LIMIT.rate}`);
    try {
      await waitFor(`Slow: both remote videos below ${FULL_WIDTH} px and decoding`,
        () => remotesAt(slow, (w) => w > 0 && w < FULL_WIDTH), 30000, 0);
      figures.downswitchMs = Date.now() - limitedAt;
      figures.during = await sampleVideo(pages, 8000);
    } finally {
      figures.qdiscDuring = qdiscStats(net);
      liftAtoB(net);
    }
    const liftedAt = Date.now();
    logSample('during limit', figures.during);
    console.log(`[during limit] slow page switched down ${figures.downswitchMs} ms after the limit`);
    for (const [name, r] of Object.entries(figures.during.Slow)) {
      assert.ok(r.framesDecoded > 0, `Slow stopped decoding ${name} during the limit: ${JSON.stringify(r)}`);
      assert.ok(r.frameWidth > 0 && r.frameWidth < FULL_WIDTH, `Slow receives ${name} at ${r.frameWidth} px during the limit`);
    }
    for (const p of fastPages) {
      for (const [name, r] of Object.entries(figures.during[p.name])) {
        assert.equal(r.frameWidth, FULL_WIDTH, `${p.name} receives ${name} at ${r.frameWidth} px while only Slow is limited`);
        assert.ok(r.framesDecoded > 0, `${p.name} stopped decoding ${name}`);
        const slowSees = figures.during.Slow[name];
        if (slowSees) assert.ok(slowSees.frameWidth < r.frameWidth, `Slow sees ${name} no smaller than ${p.name} does`);
      }
    }

    // ----- lifted: the slow page climbs back to the full layer -----
    await waitFor(`Slow: both remote videos back at ${FULL_WIDTH} px`,
      () => remotesAt(slow, (w) => w === FULL_WIDTH), 60000, 0);
    figures.recoveryMs = Date.now() - liftedAt;
    console.log(`[after limit] slow page back at ${FULL_WIDTH} px ${figures.recoveryMs} ms after the limit was lifted`);
    figures.after = await sampleVideo(pages, 4000);
    logSample('after limit', figures.after);

    // ----- a small tile gets a small layer -----
    assert.equal(await fast1.page.evaluate((id) => window.switchyard.setTileSize(id, 160, 120), ids.Fast2), true);
    const shrunkAt = Date.now();
    const small = await waitFor('Fast1: Fast2\'s small tile receives a smaller layer', async () => {
      const s = (await remoteVideoStats(fast1.page)).find((x) => x.participantId === ids.Fast2);
      return s && s.frameWidth > 0 && s.frameWidth < FULL_WIDTH ? s : { ok: false, s };
    }, 20000, 250);
    figures.smallTile = { tile: '160x120', frameWidth: small.frameWidth, frameHeight: small.frameHeight,
      switchMs: Date.now() - shrunkAt, view: (await fast1.page.evaluate(() => window.switchyard.views()))
        .find((v) => v.width === 160) ?? null };
    console.log(`[small tile] Fast1 shows Fast2 in a 160x120 tile: receives ${small.frameWidth}x${small.frameHeight} ` +
      `after ${figures.smallTile.switchMs} ms`);
    // And keeps decoding it.
    await waitFor('Fast1: Fast2\'s small tile still decoding', () => remotesAt(fast1, (w) => w < FULL_WIDTH, 1)
      .then((r) => (r.ok === false ? r : r.some((x) => x.startsWith('Fast2:')) ? r : { ok: false, r })), 10000, 0);
    await fast1.page.evaluate((id) => window.switchyard.setTileSize(id, 0, 0), ids.Fast2);
  } finally {
    watching = false;
    await speakingWatch;
  }

  // ----- active speakers -----
  const histories = Object.fromEntries(await Promise.all(pages.map(async (p) =>
    [p.name, (await p.page.evaluate(() => window.switchyard.speakerHistory())).filter((e) => e.at >= mutedAt + 3000)])));
  const firsts = Object.fromEntries(Object.entries(histories).map(([name, h]) => {
    const counts = {};
    for (const e of h) if (e.ids[0]) counts[e.ids[0]] = (counts[e.ids[0]] ?? 0) + 1;
    return [name, counts];
  }));
  figures.speakers = { muted: 'Fast2', ids, messages: Object.fromEntries(Object.entries(histories).map(([n, h]) => [n, h.length])),
    dominantCounts: firsts, speakingViolations };
  console.log(`[speakers] messages since Fast2 muted: ${JSON.stringify(figures.speakers.messages)}; ` +
    `dominant speaker counts: ${JSON.stringify(firsts)}`);
  for (const [name, h] of Object.entries(histories)) {
    const bad = h.filter((e) => e.ids[0] === ids.Fast2);
    assert.equal(bad.length, 0, `${name} was told the muted Fast2 is the dominant speaker: ${JSON.stringify(bad.slice(0, 3))}`);
    assert.ok(h.some((e) => e.ids[0] === ids.Fast1 || e.ids[0] === ids.Slow),
      `${name} never heard of an unmuted speaker: ${JSON.stringify(h.slice(-5))}`);
  }
  assert.deepEqual(speakingViolations, [], 'the muted Fast2\'s tile was marked speaking');

  const stats = await serverStats(server).catch(() => null);
  if (stats) console.log(`server: rtp_forwarded ${stats.rtp_forwarded}`);
  await Promise.all(pages.map((p) => within(10000, p.context.close().catch(() => {}))));
});
