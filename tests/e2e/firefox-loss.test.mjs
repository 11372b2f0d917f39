// End-to-end: a Firefox participant behind random loss. Firefox's automation talks to
// the browser over a WebSocket on loopback, so it cannot be put in a network namespace
// as the Chromium loss test does; its media passes a seeded UDP relay instead
// (relay.mjs): the server advertises the relay's address (--advertise-ips 127.0.0.3),
// the relay forwards every client's flow over a socket of its own and drops a share of
// Firefox's datagrams each way. A Chromium page (through the relay, untouched) meets it.
// For 0, 5 and 15 % it reports what each decodes of the other's camera against what
// that camera sent, the longest stall, NACKs and PLIs, and the server's downlink
// estimate for Firefox; it asserts what the server decides (the estimate holds, no leg
// paused) and that Firefox keeps decoding at 5 %.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, openChromiumPage, pageState, serverStats, sleep, startServer, stopServer,
  transportInfo, waitFor, within,
} from './harness.mjs';
import { closeFirefox, launchFirefox, openFirefoxPage } from './firefox.mjs';
import { startRelay } from './relay.mjs';

const ROOM = 'ff-lossy';
const RELAY_IP = '127.0.0.3';
const WINDOW_MS = 12000;
const SAMPLE_MS = 250;

let server;
let relay;
let chromiumBrowser;
let firefox;

before(async () => {
  server = await startServer('127.0.0.1:0', { args: ['--advertise-ips', RELAY_IP] });
  const udp = (await serverStats(server)).shards[0].udp_addr; // the advertised address
  const port = Number(udp.split(':').pop());
  relay = await startRelay({ host: RELAY_IP, port, upstreamHost: '127.0.0.1', seed: 16 });
  chromiumBrowser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
  firefox = await launchFirefox();
});

after(async () => {
  await within(15000, chromiumBrowser?.close().catch(() => {}));
  await closeFirefox(firefox);
  relay?.close();
  await stopServer(server, path.join(E2E_OUT, 'firefox-loss-server.log'));
});

// The page's remote video: frames decoded, width, NACKs and PLIs sent, packets lost.
const inbound = (page) => page.evaluate(async () => {
  const out = { frames: 0, width: 0, nacks: 0, plis: 0, lost: 0, packets: 0 };
  (await window.switchyard?.pc?.getStats())?.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      out.frames += s.framesDecoded ?? 0;
      out.width = Math.max(out.width, s.frameWidth ?? 0);
      out.nacks += s.nackCount ?? 0;
      out.plis += s.pliCount ?? 0;
      out.lost += s.packetsLost ?? 0;
      out.packets += s.packetsReceived ?? 0;
    }
  });
  return out;
});

// Frames the page's camera sent: the most of any of its layers.
const framesSent = (page) => page.evaluate(async () => {
  let most = 0;
  (await window.switchyard?.pc?.getStats())?.forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') most = Math.max(most, s.framesSent ?? 0);
  });
  return most;
});

// Firefox starts a receiver's counters over after an ICE restart (seen once at 15 %:
// -561 frames "decoded" and a 5.8 s "stall" read across the reset). The window adds
// up each sample's increase instead; counters that went backwards count on from their
// new values, and the window says it saw a reset.
const COUNTERS = ['frames', 'nacks', 'plis', 'lost', 'packets'];

async function measure(receiver, sender) {
  const [in0, sent0] = [await inbound(receiver.page), await framesSent(sender.page)];
  const total = Object.fromEntries(COUNTERS.map((k) => [k, 0]));
  let [prev, reset] = [in0, false];
  const add = (now) => {
    // Frames and packets only grow (packetsLost may fall as late packets come in).
    const startedOver = now.frames < prev.frames || now.packets < prev.packets;
    reset ||= startedOver;
    for (const k of COUNTERS) total[k] += startedOver ? now[k] : now[k] - prev[k];
    prev = now;
  };
  let last = { frames: 0, at: Date.now() };
  let stall = 0;
  const start = Date.now();
  for (let i = 0; i < WINDOW_MS / SAMPLE_MS && Date.now() - start < WINDOW_MS; i++) {
    await sleep(SAMPLE_MS);
    add(await inbound(receiver.page));
    if (total.frames > last.frames) last = { frames: total.frames, at: Date.now() };
    stall = Math.max(stall, Date.now() - last.at);
  }
  const in1 = await inbound(receiver.page);
  add(in1);
  const source = (await framesSent(sender.page)) - sent0;
  return {
    decoded: total.frames, source, share: total.frames / Math.max(1, source),
    longestStallMs: stall, width: in1.width, nacks: total.nacks, plis: total.plis,
    lossPct: 100 * total.lost / Math.max(1, total.packets + total.lost), countersReset: reset,
  };
}

test('a Firefox page behind 5 % and 15 % random loss keeps its estimate and its video', { timeout: 240000 }, async () => {
  const ada = await openChromiumPage(chromiumBrowser, server, `room=${ROOM}&name=Ada`);
  const fay = await openFirefoxPage(firefox, server, `room=${ROOM}&name=Fay`);
  const connected = (p) => waitFor(`${p.query}: connected with 1 remote tile`, async () => {
    const s = await pageState(p.page);
    return s.state === 'connected' && s.remoteTiles === 1 ? s : { ok: false, ...s };
  }, 45000);
  await Promise.all([connected(ada), connected(fay)]);
  const ids = {
    ada: await ada.page.evaluate(() => window.switchyard.participantId),
    fay: await fay.page.evaluate(() => window.switchyard.participantId),
  };
  // Firefox's flow through the relay: its selected pair's local end is what the server
  // saw, the relay's upstream socket for that flow.
  const ff = await transportInfo(fay.page);
  assert.equal(ff.remote?.address, RELAY_IP, `Firefox reaches the relay: ${JSON.stringify(ff)}`);
  console.log(`Firefox's pair ${JSON.stringify(ff.local)} -> ${JSON.stringify(ff.remote)}; relay flows ${relay.clients().join(', ')}`);
  await waitFor('both decode each other', async () => (await inbound(ada.page)).frames > 20 && (await inbound(fay.page)).frames > 20, 30000);

  const downlink = async () => (await serverStats(server)).shards.flatMap((s) => s.downlinks)
    .find((d) => d.participant_id === ids.fay);
  let clean = null;
  for (const share of [0, 0.05, 0.15]) {
    // Firefox may restart ICE (the page's own check of the media path, when its consent
    // checks go unanswered), which moves it to a new flow: found again at each level.
    relay.clearLoss();
    const flow = (await transportInfo(fay.page))?.local?.port;
    relay.setLoss(flow, share);
    await sleep(3000);
    const [fayGets, adaGets] = await Promise.all([measure(fay, ada), measure(ada, fay)]);
    const d = await downlink();
    const estimate = d?.estimate_bps ?? 0;
    if ((await transportInfo(fay.page))?.local?.port !== flow) {
      console.log('  (Firefox restarted ICE during the window: the rest of it was lossless)');
    }
    const dropped = relay.stats().dropped;
    console.log(`--- ${share * 100} % random loss each way on Firefox's flow (relay: ${JSON.stringify(relay.stats())})`);
    for (const [pair, f] of [['Fay<-Ada', fayGets], ['Ada<-Fay', adaGets]]) {
      console.log(`  ${pair}: ${f.decoded}/${f.source} frames (${(f.share * 100).toFixed(0)} %), longest stall ${f.longestStallMs} ms, ` +
        `${f.width} wide, NACKs ${f.nacks}, PLIs ${f.plis}, loss ${f.lossPct.toFixed(1)} %${f.countersReset ? ' (the receiver\'s counters started over)' : ''}`);
    }
    console.log(`  server's view of Fay's downlink: estimate ${Math.round(estimate / 1000)} kbit/s, loss ${(100 * (d?.loss ?? 0)).toFixed(1)} %, ` +
      `inherent ${(100 * (d?.inherent_loss ?? 0)).toFixed(1)} %, legs ${JSON.stringify(d?.legs)}`);
    assert.deepEqual({
      ada: await ada.page.evaluate(() => window.switchyard.participantId),
      fay: await fay.page.evaluate(() => window.switchyard.participantId),
    }, ids, `a page joined again at ${share * 100} %`);
    if (share === 0) {
      clean = estimate;
      // >= 10 of 20 frames/s, as the Chromium loss test asks: on a 2-core machine
      // running both browsers a clean pair stalls for ~3 s now and then (seen: 75 %).
      assert.ok(fayGets.share >= 0.5, `Firefox decodes Chromium without loss: ${JSON.stringify(fayGets)}`);
      continue;
    }
    assert.ok(dropped > 100, `the relay dropped Firefox's datagrams: ${JSON.stringify(relay.stats())}`);
    assert.ok(d.legs.every(([, forwarded]) => forwarded != null), `no leg paused: ${JSON.stringify(d.legs)}`);
    // The estimate is asserted at 5 %. At 15 % it held in three runs of four and was cut
    // to 55 % in one (Firefox's feedback reads 18-19 % loss there): reported, not asserted.
    if (share === 0.05) {
      assert.ok(estimate >= 0.7 * clean, `random loss is not congestion: ${estimate} vs ${clean} without loss`);
      assert.ok(fayGets.share >= 0.5, `Firefox keeps decoding at 5 % loss (>= 10 of 20 frames/s): ${JSON.stringify(fayGets)}`);
    }
  }
  relay.clearLoss();
  await within(10000, ada.context.close());
  await within(10000, fay.page.close().catch(() => {}));
});
