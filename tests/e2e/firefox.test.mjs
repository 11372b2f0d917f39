// End-to-end across engines: the real switchyard binary, two headless Chromium pages
// (playwright-core) and one headless Firefox page (puppeteer-core over WebDriver BiDi),
// Debian's browsers both, never downloaded ones. Only 127.0.0.0/8 is used, and every
// wait has a deadline.
//
//   SWITCHYARD_BIN   server binary (default: target/release/switchyard)
//   CHROMIUM_PATH    browser binary (default: /usr/bin/chromium)
//   FIREFOX_PATH     browser binary (default: /usr/bin/firefox-esr)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, expectMediaFlowing, inLoopbackNet, openChromiumPage,
  pageState, serverStats, startServer, stopServer, transportInfo, waitFor, within,
} from './harness.mjs';
import { closeFirefox, launchFirefox, openFirefoxPage as openFirefoxPageAt } from './firefox.mjs';

const SCREENSHOT = path.join(E2E_OUT, 'firefox-meeting.png');
const SERVER_LOG = path.join(E2E_OUT, 'firefox-server.log');

let server; // { child, url, log }
let chromiumBrowser;
let firefox;

before(async () => {
  server = await startServer();
  chromiumBrowser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
  firefox = await launchFirefox();
});

after(async () => {
  await within(15000, chromiumBrowser?.close().catch(() => {}));
  await closeFirefox(firefox);
  await stopServer(server, SERVER_LOG);
});

const openFirefoxPage = (query) => openFirefoxPageAt(firefox, server, query);

test('two Chromium pages and one Firefox page hold a meeting', { timeout: 180000 }, async () => {
  const [A, B] = await Promise.all(['Ada', 'Bob'].map((n) => openChromiumPage(chromiumBrowser, server, `room=e2e-ff&name=${n}`)));
  const F = await openFirefoxPage('room=e2e-ff&name=Fox');
  const pages = [A, B, F];

  try {
    // Every page is connected and shows both others.
    await Promise.all(pages.map((p) => waitFor(`${p.query}: connected with 2 remote tiles`, async () => {
      const s = await pageState(p.page);
      return s.state === 'connected' && s.remoteTiles === 2 ? s : { ok: false, ...s };
    }, 45000, 250)));
    pages.forEach((p) => console.log(`${p.query}: connected, 2 remote tiles, ${Date.now() - p.navigatedAt} ms after navigation`));

    // Every page decodes video from, and receives audio from, both others; Firefox's
    // video reaches the Chromium pages and theirs reaches Firefox.
    const flows = await Promise.all(pages.map((p) => expectMediaFlowing(p, { video: 2, audio: 2 }, 45000)));
    flows.forEach((f, i) => console.log(`${pages[i].query}: ${f.v} video / ${f.a} audio inbound streams rising`));
  } catch (err) {
    // The server's view of the failure: unknown senders, unknown ufrags, SRTP per peer.
    const stats = await serverStats(server).catch((e) => `unavailable: ${e.message}`);
    const ff = await transportInfo(F.page).catch((e) => `unavailable: ${e.message}`);
    err.message += `\nserver /api/stats: ${JSON.stringify(stats)}\nFirefox transport: ${JSON.stringify(ff)}`;
    throw err;
  }

  // Firefox's connection as its own stats see it: DTLS-SRTP with the server's one cipher,
  // over a candidate pair that is loopback at both ends.
  const ff = await transportInfo(F.page);
  console.log(`Firefox gathered: ${ff.localCandidates.join(', ')}`);
  console.log(`Firefox selected pair: ${ff.local?.address}:${ff.local?.port} (${ff.local?.type}) -> ` +
    `${ff.remote?.address}:${ff.remote?.port} (${ff.remote?.type}); srtpCipher ${ff.srtpCipher}, dtlsCipher ${ff.dtlsCipher}`);
  assert.ok(ff.localCandidates.some((c) => c.startsWith('udp 127.0.0.1:')),
    `Firefox gathered no 127.0.0.1 candidate (prefs not in effect?): ${ff.localCandidates.join(', ')}`);
  assert.ok(inLoopbackNet(ff.local?.address), `Firefox's selected pair starts off loopback: ${JSON.stringify(ff.local)}`);
  assert.ok(inLoopbackNet(ff.remote?.address), `Firefox's selected pair ends off loopback: ${JSON.stringify(ff.remote)}`);
  assert.equal(ff.srtpCipher, 'SRTP_AEAD_AES_128_GCM');

  // The Chromium pages meet Firefox on the same server port, loopback at both ends (the
  // server ignores checks from the machine's other addresses while it serves loopback).
  const ports = new Set([ff.remote.port]);
  for (const p of [A, B]) {
    const t = await transportInfo(p.page);
    console.log(`${p.query}: selected pair ${t.local?.address}:${t.local?.port} -> ${t.remote?.address}:${t.remote?.port}, srtpCipher ${t.srtpCipher}`);
    assert.equal(t.remote?.address, '127.0.0.1', `${p.query}: ${JSON.stringify(t)}`);
    assert.ok(inLoopbackNet(t.local?.address), `${p.query}: selected pair starts off loopback: ${JSON.stringify(t)}`);
    ports.add(t.remote.port);
  }
  assert.equal(ports.size, 1, 'all pages meet on one server port');

  // Firefox's remote tiles carry the Chromium participants' names.
  const labels = await F.page.$$eval('.tile.remote .name', (els) => els.map((e) => e.textContent).sort());
  assert.deepEqual(labels, ['Ada', 'Bob']);

  const stats = await serverStats(server);
  console.log(`server: udp_unknown_address ${stats.udp_unknown_address}, udp_unknown_ufrag ${stats.udp_unknown_ufrag}, ` +
    `rtp_forwarded ${stats.rtp_forwarded}, srtp ${JSON.stringify(stats.shards?.flatMap((s) => s.srtp))}`);

  // Chat both ways over each page's data channel (Firefox's SCTP stack against ours).
  await F.page.click('#chat-button');
  await F.page.type('#chat-input', 'from <i>Firefox</i>');
  await F.page.keyboard.press('Enter');
  await waitFor("Firefox's chat message at Ada's", () => A.page.evaluate(() =>
    window.switchyard.chat.messages().some((m) => m.text === 'from <i>Firefox</i>' && m.name === 'Fox')), 15000);
  await A.page.evaluate(() => window.switchyard.chat.send('hello Fox'));
  await waitFor("Ada's chat message in Firefox's panel", () => F.page.evaluate(() =>
    [...document.querySelectorAll('#chat-list .chat-text')].some((e) => e.textContent === 'hello Fox')), 15000);

  // Ada shares her screen: Firefox shows it in the spotlight and decodes it.
  await A.page.click('#screen-button');
  // (Headless Firefox composites nothing, so its <video> counts no frames: the receiver's
  // stats say what it decoded. It cannot capture a screen itself headless either: its
  // getDisplayMedia finds no source, which the page reports.)
  const screen = await waitFor("Ada's screen in Firefox's spotlight, decoding", () => F.page.evaluate(async () => {
    const s = window.switchyard.screens()[0];
    const track = document.querySelector('.tile.screen video')?.srcObject?.getVideoTracks()[0];
    const t = track && window.switchyard.pc.getTransceivers().find((x) => x.receiver.track === track);
    let frames = 0;
    let width = 0;
    if (t) (await t.receiver.getStats()).forEach((r) => { if (r.type === 'inbound-rtp') { frames = r.framesDecoded; width = r.frameWidth; } });
    return s?.spotlight && frames > 10 && { ...s, width, frames };
  }), 20000);
  console.log(`Firefox shows Ada's screen: ${JSON.stringify(screen)}`);

  // An ICE restart from Firefox: new credentials both sides, same participant, media on.
  const ufrags = () => F.page.evaluate(() => {
    const u = (d) => d?.sdp.match(/^a=ice-ufrag:(\S+)/m)?.[1];
    return { server: u(window.switchyard.pc.remoteDescription), page: u(window.switchyard.pc.localDescription),
      id: window.switchyard.participantId, joins: window.switchyard.joinsSent };
  });
  const before = await ufrags();
  await F.page.evaluate(() => window.switchyard.restartIce());
  const after = await waitFor('Firefox restarted ICE', async () => {
    const u = await ufrags();
    return u.server !== before.server && u.page !== before.page && u;
  }, 15000);
  console.log(`Firefox ICE restart: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
  assert.equal(after.id, before.id);
  assert.equal(after.joins, before.joins);
  await expectMediaFlowing(F, { video: 2, audio: 2 }, 30000);
  await expectMediaFlowing(A, { video: 2, audio: 2 }, 30000);

  await F.page.screenshot({ path: SCREENSHOT });
  console.log(`screenshot: ${SCREENSHOT}`);

  await Promise.all([A, B].map((p) => within(10000, p.context.close().catch(() => {}))));
  await within(10000, F.page.close().catch(() => {}));
});
