// End-to-end: the real switchyard binary + real headless Chromium (Debian's, never a
// downloaded one) with fake camera/microphone. Only loopback addresses are used, and
// every wait has a deadline.
//
//   SWITCHYARD_BIN   server binary (default: target/release/switchyard)
//   CHROMIUM_PATH    browser binary (default: /usr/bin/chromium)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, expectMediaFlowing, inboundStats, inLoopbackNet, openChromiumPage, pageState,
  sleep, startServer, stopServer, transportInfo, waitFor,
} from './harness.mjs';

const SCREENSHOT = path.join(E2E_OUT, 'meeting-3.png');
// The server's log goes to target/e2e/server.log, for reading after a failure.
const SERVER_LOG = path.join(E2E_OUT, 'server.log');

let server; // { child, url, log }
let browser;

const openPage = (query, initScript) => openChromiumPage(browser, server, query, initScript);

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
});

after(async () => {
  await browser?.close().catch(() => {});
  await stopServer(server, SERVER_LOG);
});

// CPU seconds (user + system) the server process has used, from /proc/PID/stat.
function serverCpuSeconds() {
  const stat = readFileSync(`/proc/${server.child.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime
  return ticks / 100; // USER_HZ is 100 on Linux
}

async function forwardedPackets() {
  const res = await fetch(`${server.url}/api/stats`);
  return (await res.json()).rtp_forwarded;
}

async function measureServerCpu(ms) {
  const [cpu0, fwd0, t0] = [serverCpuSeconds(), await forwardedPackets(), Date.now()];
  await sleep(ms);
  const [cpu1, fwd1, t1] = [serverCpuSeconds(), await forwardedPackets(), Date.now()];
  const secs = (t1 - t0) / 1000;
  return {
    cpuPercent: ((cpu1 - cpu0) / secs) * 100,
    forwardedPerSec: (fwd1 - fwd0) / secs,
    usPerPacket: fwd1 > fwd0 ? ((cpu1 - cpu0) * 1e6) / (fwd1 - fwd0) : NaN,
  };
}

// ---------- tests ----------

test('three pages hold a meeting', { timeout: 120000 }, async () => {
  const names = ['Ada', 'Bob', 'Cy'];
  const pages = await Promise.all(names.map((n) => openPage(`room=e2e&name=${n}`)));
  const [A, B, C] = pages;

  // Time from navigation to the first decoded remote video frame, per page.
  await Promise.all(pages.map(async (p) => {
    await waitFor(`${p.query}: first remote frame`, async () =>
      (await inboundStats(p.page)).some((s) => s.kind === 'video' && s.framesDecoded > 0), 30000, 100);
    console.log(`first remote frame decoded: ${p.query} after ${Date.now() - p.navigatedAt} ms`);
  }));

  for (const p of pages) {
    await waitFor(`${p.query}: connected with 2 remote tiles`, async () => {
      const s = await pageState(p.page);
      return s.state === 'connected' && s.text === 'connected' && s.remoteTiles === 2 && s;
    });
  }
  const flows = await Promise.all(pages.map((p) => expectMediaFlowing(p, { video: 2, audio: 2 })));
  flows.forEach((f, i) => console.log(`${names[i]}: ${f.v} video / ${f.a} audio inbound streams rising`));

  // The engine's SRTP choice and its one port, as each browser sees them: AES-128-GCM
  // (the server lists only it, see engine/build.rs), and every page's selected pair runs
  // loopback to loopback and ends on the server's one UDP port.
  const serverPorts = new Set();
  for (const p of pages) {
    const t = await transportInfo(p.page);
    console.log(`${p.query}: srtpCipher ${t.srtpCipher}, selected pair ${t.local?.address}:${t.local?.port} -> ${t.remote?.address}:${t.remote?.port}`);
    assert.equal(t.srtpCipher, 'SRTP_AEAD_AES_128_GCM');
    assert.equal(t.remote?.address, '127.0.0.1');
    assert.ok(inLoopbackNet(t.local?.address), `${p.query}: selected pair starts off loopback: ${JSON.stringify(t)}`);
    serverPorts.add(t.remote.port);
  }
  assert.equal(serverPorts.size, 1, 'all pages meet on one server port');

  // Remote tiles carry the other participants' names.
  const labels = await A.page.$$eval('.tile.remote .name', (els) => els.map((e) => e.textContent).sort());
  assert.deepEqual(labels, ['Bob', 'Cy']);
  assert.equal(await A.page.textContent('.tile.local .name'), 'Ada (you)');

  // The media reaches the tiles: every remote <video> plays a picture and holds the
  // participant's audio track too.
  for (const p of pages) {
    await waitFor(`${p.query}: remote <video> elements playing`, () => p.page.evaluate(() => {
      const videos = [...document.querySelectorAll('.tile.remote video')];
      const ok = videos.length === 2 && videos.every((v) => !v.paused && v.readyState >= 2 && v.videoWidth > 0
        && v.srcObject?.getAudioTracks().length === 1 && v.srcObject?.getVideoTracks().length === 1);
      return ok || { ok: false, videos: videos.map((v) => ({ paused: v.paused, readyState: v.readyState,
        width: v.videoWidth, tracks: v.srcObject?.getTracks().map((t) => `${t.kind}:${t.readyState}`) })) };
    }), 10000);
  }

  // Server cost of the three-person call: CPU time from /proc over 5 s, and the packets
  // it forwarded meanwhile (its own counters). Reported, not asserted: this machine is
  // shared and noisy.
  const cpu = await measureServerCpu(5000);
  console.log(`server during the 3-person call: ${cpu.cpuPercent.toFixed(1)}% of one core, ` +
    `${cpu.forwardedPerSec.toFixed(0)} forwarded packets/s, ${cpu.usPerPacket.toFixed(1)} us CPU per forwarded packet`);

  // Muting shows on the others' tiles.
  const adaId = await A.page.evaluate(() => window.switchyard.participantId);
  await A.page.click('#mic-button');
  for (const p of [B, C]) {
    await waitFor(`${p.query}: Ada's tile shows the mic muted`, () => p.page.evaluate((id) =>
      document.querySelector(`.tile.remote[data-participant-id="${id}"]`)?.dataset.audioMuted === 'true',
    adaId), 5000);
  }
  await A.page.click('#mic-button');

  mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await A.page.screenshot({ path: SCREENSHOT });
  console.log(`screenshot: ${SCREENSHOT}`);

  // Cy leaves: the others drop Cy's tile and keep receiving each other.
  await C.page.click('#leave-button');
  await waitFor('Cy sees "You left the meeting"', async () =>
    (await C.page.textContent('#notice'))?.includes('You left the meeting'), 5000);
  for (const p of [A, B]) {
    await waitFor(`${p.query}: Cy's tile removed`, async () => (await pageState(p.page)).remoteTiles === 1, 10000);
  }
  await Promise.all([A, B].map((p) => expectMediaFlowing(p, { video: 1, audio: 1 })));

  await Promise.all(pages.map((p) => p.context.close()));
});

test('camera denied shows a message', { timeout: 30000 }, async () => {
  // A browser without --use-fake-ui-for-media-stream and no granted permission: headless
  // Chromium refuses the camera prompt, so getUserMedia fails with NotAllowedError for real.
  const denying = await chromium.launch({ executablePath: CHROMIUM, headless: true, timeout: 30000,
    args: CHROMIUM_ARGS.filter((a) => a !== '--use-fake-ui-for-media-stream') });
  try {
    const context = await denying.newContext({ viewport: { width: 1280, height: 720 } });
    const page = await context.newPage();
    await page.goto(`${server.url}/?room=e2e-denied&name=Dee`, { timeout: 15000 });
    await waitFor('permission message', async () => {
      const notice = page.locator('#notice');
      return (await notice.isVisible()) && (await notice.textContent()).includes('Camera/microphone permission was denied');
    }, 10000);
    // The page did not join, did not crash, and still offers the form.
    assert.equal(await page.locator('#join-form').isVisible(), true);
    assert.equal(await page.evaluate(() => window.switchyard.participantId), null);
  } finally {
    await denying.close().catch(() => {});
  }
});

test('server unreachable shows a message', { timeout: 30000 }, async () => {
  // Port 1 on loopback refuses connections; short retry delays so "failed" comes quickly.
  const p = await openPage('room=x&name=y', () => {
    window.SWITCHYARD_WS_URL = 'ws://127.0.0.1:1/ws';
    window.SWITCHYARD_RETRY_DELAYS_MS = [100, 100, 100, 100, 100];
  });
  await waitFor('"Cannot reach the server"', async () => {
    const notice = p.page.locator('#notice');
    return (await notice.isVisible()) && (await notice.textContent()).includes('Cannot reach the server');
  }, 10000, 50);
  await waitFor('conn-state "failed"', async () => {
    const s = await pageState(p.page);
    return s.state === 'failed' && s.text === 'failed';
  }, 15000);
  assert.match(await p.page.textContent('#notice'), /Cannot reach the server/);
  await p.context.close();
});

// Last, because it restarts the shared server: a server restart is a network blip to the
// pages, which must show "reconnecting", join again on their own and get media back.
test('pages reconnect after the server restarts', { timeout: 120000 }, async () => {
  const pages = await Promise.all(['Ada', 'Bob'].map((n) => openPage(`room=e2e-restart&name=${n}`)));
  for (const p of pages) {
    await waitFor(`${p.query}: connected with 1 remote tile`, async () => {
      const s = await pageState(p.page);
      return s.state === 'connected' && s.remoteTiles === 1 && s;
    });
  }
  const listen = new URL(server.url).host;
  await stopServer(server, SERVER_LOG);
  for (const p of pages) {
    await waitFor(`${p.query}: "reconnecting" while the server is down`, async () =>
      (await pageState(p.page)).state === 'reconnecting', 15000, 100);
  }
  server = await startServer(listen); // same port: the pages keep their URL
  for (const p of pages) {
    await waitFor(`${p.query}: connected again with 1 remote tile`, async () => {
      const s = await pageState(p.page);
      return s.state === 'connected' && s.remoteTiles === 1 && s;
    }, 60000);
  }
  await Promise.all(pages.map((p) => expectMediaFlowing(p, { video: 1, audio: 1 })));
  await Promise.all(pages.map((p) => p.context.close()));
});
