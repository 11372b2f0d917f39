// End-to-end: a Chromium page on a network that drops all UDP joins anyway. The server
// and Ada's Chromium run in network namespace A, Bob's Chromium in namespace B
// (netns.mjs); every UDP datagram crossing between them is dropped by a tc filter into a
// blackhole, TCP goes through (Cy joins last from A, for comparison). Twice:
//   1. the server offers ICE-TCP on its media port number: Bob's media goes over TCP;
//   2. no ICE-TCP, only the embedded TURN server over TLS: Bob's media goes through it.
// Each time Ada and Bob decode each other, `getStats` names the candidate pair that
// carried Bob's media, and the time from opening Bob's page to his first decoded frame
// is printed next to Ada's (plain UDP). Needs root (CI runs as root). The TURN
// certificate is made here by openssl for the namespace address; Bob's browser is told
// to accept it (--ignore-certificate-errors): never a real certificate.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, expectMediaFlowing, firstFrameAfterOpen, makeTestCertificate, openChromiumPage, startServer,
  stopServer, transportInfo, waitConnected, waitFor, within,
} from './harness.mjs';
import { ADDR_A, blockUdp, fetchJsonIn, createNamespacePair, removeNamespacePair, unblockUdp, wrapperInNamespace } from './netns.mjs';

let net;
let blocked = false;
const browsers = [];
const wrappers = [];
const servers = [];
let pki;

const launchIn = async (ns, extraArgs = []) => {
  wrappers.push(wrapperInNamespace(E2E_OUT, ns, CHROMIUM));
  const b = await chromium.launch({ executablePath: wrappers.at(-1), headless: true, args: [...CHROMIUM_ARGS, ...extraArgs], timeout: 30000 });
  browsers.push(b);
  return b;
};

before(async () => {
  pki = makeTestCertificate(path.join(E2E_OUT, 'firewall-pki'), ADDR_A);
  net = createNamespacePair();
  blockUdp(net);
  blocked = true;
});

after(async () => {
  try {
    if (blocked) unblockUdp(net);
    for (const b of browsers) await within(15000, b.close().catch(() => {}));
    for (const [i, s] of servers.entries()) await stopServer(s, path.join(E2E_OUT, `firewall-server-${i}.log`));
  } finally {
    removeNamespacePair(net);
    for (const file of wrappers) rmSync(file, { force: true });
  }
});

// Ada and Cy (namespace A, UDP works) and Bob (namespace B, no UDP) meet on a server in A.
async function meetAcrossTheFirewall(room, serverArgs, bobArgs = []) {
  const server = await startServer(`${ADDR_A}:0`, { prefix: ['ip', 'netns', 'exec', net.a], args: ['--media-ips', ADDR_A, ...serverArgs] });
  servers.push(server);
  const [browserA, browserB] = await Promise.all([launchIn(net.a), launchIn(net.b, bobArgs)]);
  const ada = await openChromiumPage(browserA, server, `room=${room}&name=Ada`);
  const bob = await openChromiumPage(browserB, server, `room=${room}&name=Bob`);
  const bobFirst = await firstFrameAfterOpen(bob, 60000);
  // Cy joins last from namespace A over plain UDP: the same measure on the open path.
  const cy = await openChromiumPage(browserA, server, `room=${room}&name=Cy`);
  const cyFirst = await firstFrameAfterOpen(cy, 60000);
  await Promise.all([waitConnected(ada, 2, 60000), waitConnected(bob, 2, 60000), waitConnected(cy, 2, 60000)]);
  const adaPath = await transportInfo(ada.page);
  const bobPath = await transportInfo(bob.page);
  console.log(`Ada (UDP): ${JSON.stringify(adaPath.local)} -> ${JSON.stringify(adaPath.remote)}`);
  console.log(`Bob (no UDP): ${JSON.stringify(bobPath.local)} -> ${JSON.stringify(bobPath.remote)}; ` +
    `first frame ${bobFirst} ms after opening his page; Cy (UDP, joining after him): ${cyFirst} ms`);
  await expectMediaFlowing(ada, { video: 2, audio: 2 });
  await expectMediaFlowing(bob, { video: 2, audio: 2 });
  const shown = await bob.page.evaluate(() => document.getElementById('conn-state')?.textContent);
  const stats = await fetchJsonIn(net.a, `${server.url}/api/stats`);
  return { bobPath, adaPath, shown, stats, bobFirst };
}

test('a page on a network that drops UDP joins over ICE-TCP on the media port', { timeout: 180000 }, async () => {
  const { bobPath, adaPath, shown, stats } = await meetAcrossTheFirewall('fw-tcp', ['--ice-tcp', 'true']);
  assert.equal(bobPath.local?.protocol, 'tcp', 'Bob reaches the server over TCP');
  assert.equal(bobPath.remote?.type, 'host');
  assert.equal(adaPath.local?.protocol, 'udp', 'Ada, who can, uses UDP');
  console.log(`Bob's page shows "${shown}"; server: ICE-TCP frames ${stats.tcp_frames_in} in, ${stats.tcp_frames_out} out`);
  assert.match(shown, /tcp/);
  assert.ok(stats.tcp_frames_in > 100 && stats.tcp_frames_out > 100);
});

test('where not even the media port takes TCP, a page joins through the embedded TURN server over TLS', { timeout: 180000 }, async () => {
  const { bobPath, shown, stats } = await meetAcrossTheFirewall('fw-turn', ['--turn-tls-port', '0',
    '--turn-tls-cert', pki.cert, '--turn-tls-key', pki.key], ['--ignore-certificate-errors']);
  assert.equal(bobPath.local?.type, 'relay', 'Bob goes through the TURN server');
  assert.equal(bobPath.local?.relayProtocol, 'tls', 'over TLS');
  console.log(`Bob's page shows "${shown}"; server's TURN counters: ${JSON.stringify(stats.turn)}`);
  assert.match(shown, /relay/);
  assert.ok(stats.turn.relayed_bytes_to_peers > 50000 && stats.turn.relayed_bytes_to_clients > 50000);
});
