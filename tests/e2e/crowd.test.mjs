// Big rooms and turnover, in Chromium, with the crowd played by the load tester's
// synthetic participants (switchyard-load, real WebRTC over loopback in a process of its
// own, built beside the server by `cargo build --release --workspace`):
//
// - a 50-person meeting: 48 synthetic publishers (audio and video at thumbnail-like
//   rates, each receiving everyone) plus two Chromium pages; one page publishes its
//   camera, the other must negotiate all 49 others, receive every one of their 98 tracks
//   and decode the real camera among them;
// - turnover: a page stays while 100 synthetic publishers come and go, three at a time;
//   it keeps its identity and its SDP stays proportional to who is there (m-sections of
//   departed tracks are reused, not added).
//
// The figures (negotiation times, SDP sizes, m-sections) are printed for the docs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, SERVER_BIN, openChromiumPage, pageState, remoteVideoStats,
  serverStats, sleep, startServer, stopServer, waitConnected, waitFor, within,
} from './harness.mjs';

const LOAD_BIN = path.join(path.dirname(SERVER_BIN), 'switchyard-load');

let server;
let browser;

before(async () => {
  assert.ok(existsSync(LOAD_BIN), `${LOAD_BIN} is missing: cargo build --release --workspace`);
  server = await startServer('127.0.0.1:0', { args: ['--max-participants', '50'] });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
});

after(async () => {
  await within(15000, browser?.close().catch(() => {}));
  await stopServer(server, path.join(E2E_OUT, 'crowd-server.log'));
});

// Load testers this file started and that still run: killed (by PID) if the runner dies.
const liveLoads = new Set();
process.on('exit', () => {
  for (const child of liveLoads) { try { child.kill('SIGKILL'); } catch { /* gone */ } }
});

// Starts switchyard-load against the server; resolves with its JSON report when it ends
// by itself (its own --duration bounds it), or rejects after `timeoutMs`.
function runLoad(args, timeoutMs, logName) {
  const child = spawn(LOAD_BIN, ['--url', server.url, '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  liveLoads.add(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`switchyard-load ran past ${timeoutMs} ms:\n${err.slice(-2000)}`)); }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      liveLoads.delete(child);
      writeFileSync(path.join(E2E_OUT, `${logName}-load.log`), err);
      if (code !== 0) return reject(new Error(`switchyard-load exited ${code}:\n${err.slice(-2000)}`));
      try { resolve(JSON.parse(out)); } catch (e) { reject(new Error(`switchyard-load printed no report (${e.message}):\n${out.slice(-500)}`)); }
    });
  });
  return { child, done };
}

async function roomMembers(name) {
  const res = await fetch(`${server.url}/api/rooms`, { signal: AbortSignal.timeout(5000) });
  const room = (await res.json()).find((r) => r.name === name);
  return room?.participants?.length ?? 0;
}

// The page's connection as negotiated: m-sections, SDP sizes, and inbound-rtp streams
// that have received packets, per kind.
const connectionShape = (page) => page.evaluate(async () => {
  const pc = window.switchyard?.pc;
  if (!pc) return null;
  const received = { audio: 0, video: 0 };
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && (s.packetsReceived ?? 0) > 0) received[s.kind] += 1;
  });
  return {
    id: window.switchyard.participantId,
    state: window.switchyard.state,
    remoteTiles: window.switchyard.remoteTileCount(),
    mSections: pc.getTransceivers().length,
    receiving: pc.getTransceivers().filter((t) => t.currentDirection === 'recvonly' || t.currentDirection === 'sendrecv').length,
    localSdpBytes: pc.localDescription?.sdp.length ?? 0,
    remoteSdpBytes: pc.remoteDescription?.sdp.length ?? 0,
    received,
  };
});

// What Ada's browser says of the camera it receives from Bea, and Bea's of each layer it
// sends: for a window in which Ada decoded too little.
async function beaDiagnostics(adaPage, beaPage) {
  const inbound = await adaPage.evaluate(async () => {
    const pc = window.switchyard?.pc;
    for (const el of document.querySelectorAll('.tile.remote')) {
      if (!el.querySelector('.name')?.textContent?.includes('Bea')) continue;
      const track = el.querySelector('video')?.srcObject?.getVideoTracks()[0];
      const t = track && pc?.getTransceivers().find((x) => x.receiver.track === track);
      if (!t) return { tile: 'no receiver' };
      let s = {};
      (await t.receiver.getStats()).forEach((r) => { if (r.type === 'inbound-rtp') s = r; });
      return { mid: t.mid, packetsReceived: s.packetsReceived, packetsLost: s.packetsLost, nackCount: s.nackCount,
        pliCount: s.pliCount, framesReceived: s.framesReceived, framesDecoded: s.framesDecoded, framesDropped: s.framesDropped,
        keyFramesDecoded: s.keyFramesDecoded, freezeCount: s.freezeCount, totalFreezesDuration: s.totalFreezesDuration,
        frameWidth: s.frameWidth, visible: el.getBoundingClientRect().height > 0 };
    }
    return { tile: 'no tile for Bea' };
  }).catch((err) => ({ error: err.message }));
  const outbound = await beaPage.evaluate(async () => {
    const out = [];
    (await window.switchyard?.pc?.getStats())?.forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') {
        out.push({ rid: r.rid, framesEncoded: r.framesEncoded, frameWidth: r.frameWidth, active: r.active,
          qualityLimitationReason: r.qualityLimitationReason, pliCount: r.pliCount, nackCount: r.nackCount });
      }
    });
    return out;
  }).catch((err) => ({ error: err.message }));
  return { atAda: inbound, fromBea: outbound };
}

test('a 50-person meeting: 48 synthetic publishers and two Chromium pages; a page receives all 98 tracks and decodes the real camera', { timeout: 240000 }, async () => {
  const room = 'e2e-crowd';
  // Thumbnail-like publishers: 5 frames/s of one 1000-byte packet, and 5 audio packets/s
  // (a muted microphone's comfort noise). 48 of them, each receiving the other 49, make
  // the server forward about 23,000 packets/s on this small machine beside two browsers.
  const load = runLoad([
    '--room', room, '--scenario', 'meeting', '--video-publishers', '48',
    '--video-fps', '5', '--audio-pps', '5', '--video-kbps', '40', '--video-packet-bytes', '1000',
    '--ramp', '12', '--duration', '30',
  ], 150000, 'crowd');
  await waitFor('48 synthetic participants in the room', async () => (await roomMembers(room)) >= 48 || { ok: false, n: await roomMembers(room) }, 60000, 500);

  const bea = await openChromiumPage(browser, server, `room=${room}&name=Bea`);
  const ada = await openChromiumPage(browser, server, `room=${room}&name=Ada`);
  try {
    const t0 = ada.navigatedAt;
    await waitConnected(ada, 49, 60000);
    const connectedMs = Date.now() - t0;
    const all = await waitFor('Ada receiving 49 video and 49 audio tracks', async () => {
      const s = await connectionShape(ada.page);
      return (s && s.received.video >= 49 && s.received.audio >= 49) ? s : { ok: false, ...s };
    }, 60000, 500);
    const allTracksMs = Date.now() - t0;
    // Bea's camera is the real publisher: Ada decodes it at a moving frame rate.
    const beaFrames = async () => (await remoteVideoStats(ada.page)).find((s) => s.name?.includes('Bea'))?.framesDecoded ?? 0;
    await waitFor('Ada decoding Bea', async () => (await beaFrames()) > 0, 30000);
    // Two 3 s windows; the better one is asserted, both are printed, and a window under
    // 10 frames/s prints what Ada's and Bea's browsers say about it. This test is about
    // the crowd being received at all; stalls have their own tests (loss.test.mjs). On a
    // loaded 2-core CI machine one window once decoded nothing (a 3 s freeze).
    const windows = [];
    for (let i = 0; i < 2; i++) {
      const start = await beaFrames();
      await sleep(3000);
      windows.push(((await beaFrames()) - start) / 3);
      if (windows[i] < 10) console.log(`NOTE: window ${i + 1} decoded Bea at ${windows[i]} frames/s: ${JSON.stringify(await beaDiagnostics(ada.page, bea.page))}`);
    }
    const fps = Math.max(...windows);
    const beaShape = await connectionShape(bea.page);
    const stats = await serverStats(server);
    const figures = {
      adaJoinToConnectedMs: connectedMs, adaJoinToAllTracksMs: allTracksMs, beaFpsAtAda: windows,
      ada: all, bea: beaShape, rtpForwardedSoFar: stats.rtp_forwarded,
    };
    console.log(`50-person meeting: ${JSON.stringify(figures)}`);
    assert.equal(all.remoteTiles, 49, 'Ada shows the 49 others');
    assert.ok(fps >= 10, `Ada decodes Bea's camera at ${fps} frames/s`);
    assert.ok(beaShape.received.video >= 49 && beaShape.received.audio >= 49, `Bea receives everyone: ${JSON.stringify(beaShape.received)}`);
    // One m-section per received track and two of its own; the frame limit (214 KiB at
    // 50) must hold the largest SDP with room to spare.
    assert.ok(all.mSections <= 2 + 98 + 4, `Ada's m-sections: ${all.mSections}`);
    assert.ok(all.remoteSdpBytes < 150 * 1024, `Ada's remote SDP: ${all.remoteSdpBytes} bytes`);

    const report = await load.done;
    console.log(`50-person meeting, synthetic side: delivery ${report.delivery_ratio.toFixed(4)}, forwarded ${report.forwarded_pps.toFixed(0)} packets/s, server ${report.server_cpu_percent?.toFixed(0)} % CPU, ${report.server_cpu_us_per_packet?.toFixed(2)} us/packet`);
    assert.equal(report.participants, 48);
    assert.ok(report.delivery_ratio >= 0.9, `the synthetic publishers received ${report.delivery_ratio} of each other's packets`);
  } finally {
    await within(10000, ada.context.close());
    await within(10000, bea.context.close());
    load.child.kill('SIGKILL');
  }
});

test('turnover: a page stays while 100 synthetic publishers come and go; its id stays and its SDP tracks who is present', { timeout: 300000 }, async () => {
  const room = 'e2e-turnover';
  const lou = await openChromiumPage(browser, server, `room=${room}&name=Lou`);
  try {
    await waitConnected(lou, 0, 30000);
    const first = await connectionShape(lou.page);
    // Each stays about 3 gaps: at most 4 present at once (one joins before the oldest
    // leaves).
    const present = 3;
    const load = runLoad([
      '--room', room, '--scenario', 'meeting', '--video-publishers', '0',
      '--churn', '100', '--churn-gap-ms', '600', '--churn-present', String(present),
      '--video-fps', '15', '--audio-pps', '25', '--video-kbps', '150', '--duration', '1',
    ], 240000, 'turnover');
    const samples = [];
    let finished = null;
    load.done.then((r) => { finished = { report: r }; }, (e) => { finished = { error: e }; });
    const deadline = Date.now() + 230000;
    while (!finished && Date.now() < deadline) {
      const s = await connectionShape(lou.page);
      if (s) samples.push({ at: Date.now(), ...s });
      await sleep(1000);
    }
    if (finished?.error) throw finished.error;
    assert.ok(finished, 'the turnover ended');
    const report = finished.report;
    // Everyone has left: the page shows nobody and its connection has settled.
    const last = await waitFor('Lou alone again', async () => {
      const s = await connectionShape(lou.page);
      return (s && s.remoteTiles === 0 && s.state === 'connected') ? s : { ok: false, ...s };
    }, 30000);
    const peak = (key) => Math.max(...samples.map((s) => s[key]));
    const figures = {
      joined: report.churn.joined, failed: report.churn.failed, seconds: report.churn.seconds,
      ids: [...new Set(samples.map((s) => s.id))], peakTiles: peak('remoteTiles'),
      mSections: { first: first.mSections, peak: peak('mSections'), last: last.mSections },
      remoteSdpBytes: { first: first.remoteSdpBytes, peak: peak('remoteSdpBytes'), last: last.remoteSdpBytes },
      joinsSent: await lou.page.evaluate(() => window.switchyard.joinsSent),
    };
    console.log(`turnover: ${JSON.stringify(figures)}`);
    assert.equal(report.churn.joined, 100, 'all 100 joined');
    assert.equal(report.churn.failed, 0);
    assert.deepEqual(figures.ids, [first.id], 'Lou kept one identity throughout');
    assert.equal(last.id, first.id);
    assert.ok(figures.peakTiles >= present, `Lou saw the others (at most ${figures.peakTiles} at once)`);
    // Lou's own two, plus the audio and video m-sections of the most present at once,
    // reused by those who come later: proportional to who was there, not to 100 joins.
    const bound = first.mSections + 2 * (present + 1);
    assert.ok(figures.mSections.peak <= bound, `m-sections peaked at ${figures.mSections.peak} (bound ${bound})`);
    assert.ok(last.remoteSdpBytes < 16 * 1024, `Lou's SDP after 100 joins: ${last.remoteSdpBytes} bytes`);
  } finally {
    await within(10000, lou.context.close());
  }
});
