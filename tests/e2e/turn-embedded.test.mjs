// End-to-end: pages that may only use TURN (`?relay=1`: iceTransportPolicy "relay", what
// a browser behind a firewall that lets no UDP through to the media port ends up with)
// join through the server's own embedded TURN server (turn/): once over TURN/UDP, once
// where TURN over TLS is the only way offered. Each meets a page on plain UDP; both
// decode each other; `getStats` says which candidate pair carried the media; the time
// from opening the page to its first decoded frame is printed for each path.
//
// The TLS certificate is made here, for 127.0.0.1, by openssl; the Chromium that takes
// the TLS path is told to accept it (--ignore-certificate-errors, this test's browser
// only): never a real certificate.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { closeFirefox, launchFirefox, openFirefoxPage } from './firefox.mjs';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, expectMediaFlowing, firstFrameAfterOpen, makeTestCertificate, openChromiumPage, serverStats, startServer,
  stopServer, transportInfo, waitConnected, waitFor, within,
} from './harness.mjs';

let browser;
const servers = [];
let cert;
let key;

before(async () => {
  ({ cert, key } = makeTestCertificate(path.join(E2E_OUT, 'turn-pki'), '127.0.0.1'));
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
    args: [...CHROMIUM_ARGS, '--ignore-certificate-errors'], timeout: 30000 });
});

after(async () => {
  await within(15000, browser?.close().catch(() => {}));
  for (const [i, s] of servers.entries()) await stopServer(s, path.join(E2E_OUT, `turn-embedded-server-${i}.log`));
});

// Bob (Chromium, any path) meets Ada (relay only: a Chromium page with ?relay=1, or
// what `openRelayed` opens).
async function meetThroughTurn(serverArgs, room, openRelayed) {
  const server = await startServer('127.0.0.1:0', { args: serverArgs });
  servers.push(server);
  const bob = await openChromiumPage(browser, server, `room=${room}&name=Bob`);
  await waitFor('Bob joined', () => bob.page.evaluate(() => window.switchyard?.state === 'joined' || window.switchyard?.state === 'connected'), 20000).catch(() => {});
  const ada = openRelayed
    ? await openRelayed(server, `room=${room}&name=Ada`)
    : await openChromiumPage(browser, server, `room=${room}&name=Ada&relay=1`);
  const adaFirst = await firstFrameAfterOpen(ada);
  const bobFirst = await firstFrameAfterOpen(bob);
  await Promise.all([waitConnected(ada, 1, 45000), waitConnected(bob, 1, 45000)]);
  const adaPath = await transportInfo(ada.page);
  const bobPath = await transportInfo(bob.page);
  console.log(`Ada (relay only): ${JSON.stringify(adaPath.local)} -> ${JSON.stringify(adaPath.remote)}; first frame ${adaFirst} ms after opening`);
  console.log(`Bob: ${JSON.stringify(bobPath.local)} -> ${JSON.stringify(bobPath.remote)}; first frame ${bobFirst} ms after opening`);
  const shown = () => ada.page.evaluate(() => document.getElementById('conn-state')?.dataset.path);
  await waitFor('Ada says she is relayed', async () => (await shown()) === 'relay' || { ok: false, shown: await shown() }, 10000);
  await expectMediaFlowing(ada, { video: 1, audio: 1 });
  await expectMediaFlowing(bob, { video: 1, audio: 1 });
  const turn = (await serverStats(server)).turn;
  console.log(`server's TURN counters: ${JSON.stringify(turn)}`);
  await ada.context?.close().catch(() => {});
  await bob.context.close();
  return { adaPath, bobPath, turn };
}

test('a relay-only page meets a UDP page through the embedded TURN server over UDP', { timeout: 150000 }, async () => {
  // UDP only: with TURN over TCP offered too, a loaded CI machine once had Chromium
  // nominate the TCP relay pair (its UDP allocation answered later); TCP and TLS have
  // tests of their own (the next one, and firewall.test.mjs).
  const { adaPath, turn } = await meetThroughTurn(['--turn-udp-port', '0'], 'turn-udp');
  assert.equal(adaPath.local?.type, 'relay', 'Ada goes through the TURN server');
  assert.equal(adaPath.local?.relayProtocol, 'udp');
  assert.ok(turn.allocations >= 1 && turn.relayed_bytes_to_peers > 50000 && turn.relayed_bytes_to_clients > 50000,
    `media relayed both ways: ${JSON.stringify(turn)}`);
});

test('where TURN over TLS is all there is, a relay-only page meets a UDP page through it', { timeout: 150000 }, async () => {
  const { adaPath, turn } = await meetThroughTurn(['--turn-tls-port', '0', '--turn-tls-cert', cert, '--turn-tls-key', key],
    'turn-tls');
  assert.equal(adaPath.local?.type, 'relay');
  assert.equal(adaPath.local?.relayProtocol, 'tls', 'the relayed candidate was allocated over TLS');
  assert.ok(turn.connections_accepted >= 1 && turn.relayed_bytes_to_peers > 50000, JSON.stringify(turn));
});

test('a Firefox page that may only relay meets a Chromium page through the embedded TURN server', { timeout: 150000 }, async () => {
  // Firefox's own relay-only switch (no page change): what its users behind a UDP
  // firewall with a TURN server configured end up with.
  const firefox = await launchFirefox({ 'media.peerconnection.ice.relay_only': true });
  try {
    const { adaPath, turn } = await meetThroughTurn(['--turn-udp-port', '0'], 'turn-firefox',
      (server, query) => openFirefoxPage(firefox, server, query));
    assert.equal(adaPath.local?.type, 'relay', 'Firefox goes through the TURN server');
    assert.ok(turn.relayed_bytes_to_peers > 50000 && turn.relayed_bytes_to_clients > 50000, JSON.stringify(turn));
  } finally {
    await closeFirefox(firefox);
  }
});
