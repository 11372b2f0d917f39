// End-to-end: an ICE restart keeps a participant through a broken media path. The server
// and Ada's Chromium run in network namespace A, Bob's Chromium in namespace B (netns.mjs);
// a packet filter drops all UDP between them for a few seconds while the signaling
// WebSocket (TCP) stays up. Bob's page restarts ICE on the same PeerConnection (new
// credentials on both sides; the server's demux follows its new ufrag), and media flows
// again both ways with the same participant id, no new `join`, and his chat intact.
// Needs root (namespaces, tc), as CI has. Loopback addresses only (127.0.100.0/24).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, expectMediaFlowing, openChromiumPage, pageState, startServer, stopServer,
  waitConnected, waitFor, within,
} from './harness.mjs';
import { ADDR_A, blockUdp, createNamespacePair, removeNamespacePair, unblockUdp, wrapperInNamespace } from './netns.mjs';

const BLOCK_MS = 12000; // past Chromium calling the path disconnected (~7 s) and the page's 2 s grace
const SERVER_LOG = path.join(E2E_OUT, 'ice-restart-server.log');
const FIGURES_FILE = path.join(E2E_OUT, 'ice-restart-figures.json');

let net;
let server;
const browsers = [];
const wrappers = [];
let blocked = false;

const launchIn = async (ns) => {
  wrappers.push(wrapperInNamespace(E2E_OUT, ns, CHROMIUM));
  const b = await chromium.launch({ executablePath: wrappers.at(-1), headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
  browsers.push(b);
  return b;
};

before(async () => {
  net = createNamespacePair();
  server = await startServer(`${ADDR_A}:0`, { prefix: ['ip', 'netns', 'exec', net.a], args: ['--media-ips', ADDR_A] });
});

after(async () => {
  try {
    if (blocked) unblockUdp(net);
    for (const b of browsers) await within(15000, b.close().catch(() => {}));
    await stopServer(server, SERVER_LOG);
  } finally {
    removeNamespacePair(net);
    for (const file of wrappers) rmSync(file, { force: true });
  }
});

test('ICE restart: media returns after a blocked path, same participant, no new join', { timeout: 150000 }, async () => {
  const [browserA, browserB] = await Promise.all([launchIn(net.a), launchIn(net.b)]);
  const ada = await openChromiumPage(browserA, server, 'room=restart&name=Ada');
  const bob = await openChromiumPage(browserB, server, 'room=restart&name=Bob');
  for (const p of [ada, bob]) {
    await waitConnected(p, 1);
    await expectMediaFlowing(p, { video: 1, audio: 1 });
  }
  // The ICE ufrags of both ends, from the page's descriptions.
  const ufrags = () => bob.page.evaluate(() => {
    const ufrag = (d) => d?.sdp.match(/^a=ice-ufrag:(\S+)/m)?.[1];
    return { server: ufrag(window.switchyard.pc.remoteDescription), page: ufrag(window.switchyard.pc.localDescription) };
  });
  const bobBefore = await bob.page.evaluate(() => ({ id: window.switchyard.participantId, joins: window.switchyard.joinsSent }));
  const ufragsBefore = await ufrags();
  await bob.page.evaluate(() => window.switchyard.chat.send('before the blackout'));
  await waitFor('the chat message reaches Ada', () => ada.page.evaluate(() =>
    window.switchyard.chat.messages().some((m) => m.text === 'before the blackout')), 10000);

  blockUdp(net);
  blocked = true;
  const blockedAt = Date.now();
  const during = await waitFor('Bob notices the broken path', async () => {
    const s = await pageState(bob.page);
    return s.state === 'reconnecting' && s;
  }, BLOCK_MS + 10000);
  const noticedMs = Date.now() - blockedAt;
  const left = BLOCK_MS - (Date.now() - blockedAt);
  if (left > 0) await new Promise((r) => setTimeout(r, left));
  unblockUdp(net);
  blocked = false;
  const unblockedAt = Date.now();
  console.log(`[blocked] ${BLOCK_MS} ms; Bob showed ${during.state} after ${noticedMs} ms`);

  await waitFor('Bob connected again', async () => (await pageState(bob.page)).state === 'connected', 30000);
  const reconnectedMs = Date.now() - unblockedAt;
  await expectMediaFlowing(bob, { video: 1, audio: 1 });
  await expectMediaFlowing(ada, { video: 1, audio: 1 });
  const mediaBackMs = Date.now() - unblockedAt;

  const bobAfter = await bob.page.evaluate(() => ({ id: window.switchyard.participantId, joins: window.switchyard.joinsSent,
    restarts: window.switchyard.iceRestarts(), chat: window.switchyard.chat.messages().map((m) => m.text) }));
  const adaSees = await ada.page.evaluate(() => [...document.querySelectorAll('.tile.remote')].map((t) => t.dataset.participantId));
  const figures = { blockMs: BLOCK_MS, noticedMs, restarts: bobAfter.restarts, reconnectedAfterUnblockMs: reconnectedMs,
    mediaBothWaysAfterUnblockMs: mediaBackMs };
  console.log(`[ice restart] ${JSON.stringify(figures)}`);
  mkdirSync(E2E_OUT, { recursive: true });
  writeFileSync(FIGURES_FILE, JSON.stringify(figures, null, 2) + '\n');

  const ufragsAfter = await ufrags();
  console.log(`[ufrags] before ${JSON.stringify(ufragsBefore)}, after ${JSON.stringify(ufragsAfter)}`);
  assert.notEqual(ufragsAfter.server, ufragsBefore.server, "the server's new ufrag (its demux followed it)");
  assert.notEqual(ufragsAfter.page, ufragsBefore.page, "the page's new ufrag");
  assert.equal(bobAfter.id, bobBefore.id, 'the same participant');
  assert.equal(bobAfter.joins, bobBefore.joins, 'no new join');
  assert.ok(bobAfter.restarts.length >= 1, 'recovered by an ICE restart');
  assert.deepEqual(adaSees, [bobBefore.id], "Ada's tile is still Bob's");
  assert.ok(bobAfter.chat.includes('before the blackout'), 'the chat is kept');
  // And the chat still works over the restarted connection.
  await bob.page.evaluate(() => window.switchyard.chat.send('after the blackout'));
  await waitFor('a chat message after the restart', () => ada.page.evaluate(() =>
    window.switchyard.chat.messages().some((m) => m.text === 'after the blackout')), 10000);
  for (const p of [ada, bob]) await p.context.close();
});
