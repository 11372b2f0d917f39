// End-to-end: a page that may only use TURN (`?relay=1`: iceTransportPolicy "relay", as
// a browser behind a UDP-blocking firewall ends up) meets a page that may go either way,
// through Debian's coturn on loopback, with TURN credentials the server derived for that
// participant alone (auth/turn.rs; coturn's `use-auth-secret`). coturn is the TURN
// implementation nobody here wrote: that it admits the page checks the derivation, and
// a credential for another participant, tampered or expired, is refused by it
// (turnutils_uclient). tests/run-all.sh installs coturn from Debian when missing; this
// file fails without it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import path from 'node:path';
import { writeFileSync, mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, expectMediaFlowing, openChromiumPage, serverStats, startServer, stopServer,
  transportInfo, waitConnected, waitFor, within,
  freePort,
} from './harness.mjs';

const TURN_SECRET = 'e2e-turn-shared-secret-0123456789';
const ROOM = 'relayed';

let turn;
let turnLog = [];
let turnPort;
let server;
let browser;


function startTurn(port) {
  // Loopback only: listening, relaying and the peers it may relay to (the SFU on
  // 127.0.0.1). No TLS/DTLS listeners, no CLI, no config file, log to stdout.
  const args = ['-n', '--log-file', 'stdout', '--simple-log', '--no-cli', '--no-tls', '--no-dtls',
    '--listening-ip', '127.0.0.1', '--relay-ip', '127.0.0.1', '--listening-port', String(port),
    '--min-port', '49152', '--max-port', '65535', '--realm', 'switchyard.test',
    '--use-auth-secret', `--static-auth-secret=${TURN_SECRET}`, '--allow-loopback-peers',
    '--allowed-peer-ip=127.0.0.1', '--no-multicast-peers', '--fingerprint'];
  const child = spawn('turnserver', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (c) => turnLog.push(...String(c).split('\n').filter(Boolean)));
  child.stderr.on('data', (c) => turnLog.push(...String(c).split('\n').filter(Boolean)));
  return child;
}

before(async () => {
  const found = spawnSync('turnserver', ['--help'], { encoding: 'utf8' });
  assert.ok(!found.error, 'turnserver (Debian package coturn) is needed: tests/run-all.sh installs it');
  turnPort = await freePort();
  turn = startTurn(turnPort);
  await waitFor('coturn listening', () => turnLog.some((l) => /listener opened on|Total General servers/i.test(l)), 15000, 100);
  server = await startServer('127.0.0.1:0', {
    args: ['--ice-servers', `turn:127.0.0.1:${turnPort}?transport=udp`, '--turn-secret', TURN_SECRET,
      '--turn-credential-ttl', '10m'],
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
});

after(async () => {
  await within(15000, browser?.close().catch(() => {}));
  await stopServer(server, path.join(E2E_OUT, 'turn-server.log'));
  turn?.kill('SIGTERM');
  mkdirSync(E2E_OUT, { recursive: true });
  writeFileSync(path.join(E2E_OUT, 'turn-coturn.log'), turnLog.join('\n') + '\n');
});

// What coturn's own client makes of a username and password: true when it allocated.
function uclientAllocates(username, password) {
  const r = spawnSync('turnutils_uclient', ['-u', username, '-w', password, '-p', String(turnPort),
    '-n', '1', '-m', '1', '-l', '100', '-y', '-e', '127.0.0.1', '127.0.0.1'], { encoding: 'utf8', timeout: 20000 });
  const out = `${r.stdout}\n${r.stderr}`;
  // 0 and the counts of what went through its two relays; 255 with "Cannot complete
  // Allocation" when coturn refuses the credentials.
  return { ok: r.status === 0 && /tot_recv_bytes/.test(out), out };
}

test('a page that may only use TURN joins through coturn with its own credentials; others are refused by coturn', { timeout: 120000 }, async () => {
  const open = (name, extra = '') => openChromiumPage(browser, server, `room=${ROOM}&name=${name}${extra}`);
  const ada = await open('Ada', '&relay=1');
  const bob = await open('Bob');
  await Promise.all([waitConnected(ada, 1, 45000), waitConnected(bob, 1, 45000)]);
  const adaPath = await transportInfo(ada.page);
  const bobPath = await transportInfo(bob.page);
  console.log(`Ada's pair: ${JSON.stringify(adaPath.local)} -> ${JSON.stringify(adaPath.remote)}`);
  console.log(`Bob's pair: ${JSON.stringify(bobPath.local)} -> ${JSON.stringify(bobPath.remote)}`);
  assert.equal(adaPath.local?.type, 'relay', 'Ada goes through the TURN server');
  // (Bob may use the TURN server too: Chromium with both a loopback host candidate and a
  // relayed one was seen to nominate the relayed pair. Only Ada is held to relaying.)
  const shown = () => ada.page.evaluate(() => document.getElementById('conn-state')?.dataset.path);
  await waitFor('Ada says it is relayed', async () => (await shown()) === 'relay' || { ok: false, shown: await shown() }, 10000);
  console.log(`Ada shows "${await ada.page.evaluate(() => document.getElementById('conn-state').textContent)}"`);
  await expectMediaFlowing(ada, { video: 1, audio: 1 });
  await expectMediaFlowing(bob, { video: 1, audio: 1 });

  // The credentials Ada was handed are hers: EXPIRY:ID, HMAC-SHA1 under the secret.
  const iceServers = await ada.page.evaluate(() => window.switchyard.pc.getConfiguration().iceServers);
  const adaId = await ada.page.evaluate(() => window.switchyard.participantId);
  const bobServers = await bob.page.evaluate(() => window.switchyard.pc.getConfiguration().iceServers);
  const [expiry, who] = iceServers[0].username.split(':');
  console.log(`Ada's TURN username ${iceServers[0].username}; Bob's ${bobServers[0].username}`);
  assert.equal(who, adaId);
  const ttl = Number(expiry) - Date.now() / 1000;
  assert.ok(ttl > 500 && ttl <= 600, `valid for the configured 10 minutes: ${ttl}`);
  assert.notEqual(iceServers[0].credential, bobServers[0].credential, 'each participant its own password');

  // coturn's own client: Ada's pair allocates; tampered, or expired, it does not.
  const sign = (user) => createHmac('sha1', TURN_SECRET).update(user).digest('base64');
  assert.equal(sign(iceServers[0].username), iceServers[0].credential, 'the password is the HMAC of the username');
  const good = uclientAllocates(iceServers[0].username, iceServers[0].credential);
  assert.ok(good.ok, `coturn admits Ada's credentials:\n${good.out.slice(-1500)}`);
  const forged = uclientAllocates(`${expiry}:p999`, iceServers[0].credential);
  assert.ok(!forged.ok, `coturn refuses Ada's password for another participant:\n${forged.out.slice(-800)}`);
  const old = `${Math.floor(Date.now() / 1000) - 60}:${adaId}`;
  const expired = uclientAllocates(old, sign(old));
  assert.ok(!expired.ok, `coturn refuses an expired one:\n${expired.out.slice(-800)}`);
  const stats = await serverStats(server);
  console.log(`server forwarded ${stats.rtp_forwarded} packets; coturn log lines: ${turnLog.length}`);
});
