// End-to-end: three Switchyard nodes as one service through Debian's redis-server
// (loopback, a free port, no persistence; tests/install-deps.sh installs it). Ada's page
// comes from node a, Bob's from b, Cy's from c: they meet in one room on one node (the
// nodes that do not host it answer `moved`, and the web client follows). Then the
// hosting node is killed (SIGKILL): the pages whose own node lives reconnect by
// themselves and meet again on a live node; the time from the kill to media flowing is
// printed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, expectMediaFlowing, openChromiumPage, pageState, startServer, stopServer,
  waitConnected, waitFor, within,
  freePort,
} from './harness.mjs';

const ROOM = 'cluster';
let redis;
let redisPort;
const nodes = {};
let browser;


before(async () => {
  const found = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  assert.ok(!found.error, 'redis-server (Debian package redis-server) is needed: tests/install-deps.sh installs it');
  redisPort = await freePort();
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  await waitFor('redis-server answers', () => spawnSync('redis-cli', ['-p', String(redisPort), 'ping'],
    { encoding: 'utf8' }).stdout?.trim() === 'PONG', 10000, 100);
  for (const id of ['a', 'b', 'c']) {
    nodes[id] = await startServer('127.0.0.1:0', { args: ['--redis', `redis://127.0.0.1:${redisPort}`, '--node-id', id] });
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
});

after(async () => {
  await within(15000, browser?.close().catch(() => {}));
  for (const [id, node] of Object.entries(nodes)) await stopServer(node, path.join(E2E_OUT, `cluster-node-${id}.log`));
  redis?.kill('SIGKILL');
});

// The node ids that list the room, as node `via` sees the cluster.
async function hostsOf(via) {
  const r = await fetch(`${via.url}/api/nodes`);
  const { nodes: live } = await r.json();
  return live.filter((n) => n.rooms.includes(ROOM)).map((n) => n.id);
}

test('pages on three nodes meet on one; when that node dies the others come back by themselves', { timeout: 180000 }, async () => {
  await waitFor('three nodes registered', async () => {
    const r = await fetch(`${nodes.c.url}/api/nodes`);
    return (await r.json()).nodes.length === 3;
  }, 10000, 200);
  const ada = await openChromiumPage(browser, nodes.a, `room=${ROOM}&name=Ada`);
  await waitFor('Ada joined', async () => (await pageState(ada.page)).state !== undefined, 20000);
  const bob = await openChromiumPage(browser, nodes.b, `room=${ROOM}&name=Bob`);
  const cy = await openChromiumPage(browser, nodes.c, `room=${ROOM}&name=Cy`);
  await Promise.all([waitConnected(ada, 2, 45000), waitConnected(bob, 2, 45000), waitConnected(cy, 2, 45000)]);
  for (const p of [ada, bob, cy]) await expectMediaFlowing(p, { video: 2, audio: 2 });
  const hosts = await hostsOf(nodes.b);
  console.log(`the room is hosted by ${JSON.stringify(hosts)}`);
  assert.equal(hosts.length, 1, 'one node hosts the room');
  const host = hosts[0];
  const moved = await Promise.all([bob, cy].map((p) => p.page.evaluate(() => window.switchyard.participantId)));
  console.log(`Bob and Cy are ${moved.join(', ')} on node ${host}`);

  // Kill the hosting node. Pages whose own node lives come back by themselves.
  const survivors = Object.entries({ a: ada, b: bob, c: cy }).filter(([id]) => id !== host).map(([, p]) => p);
  const killedAt = Date.now();
  nodes[host].child.kill('SIGKILL');
  await Promise.all(survivors.map((p) => waitConnected(p, 1, 60000)));
  await Promise.all(survivors.map((p) => expectMediaFlowing(p, { video: 1, audio: 1 }, 60000)));
  const tookMs = Date.now() - killedAt;
  const after = await hostsOf(nodes[Object.keys(nodes).find((id) => id !== host)]);
  console.log(`node ${host} killed: ${survivors.map((p) => p.query).join(' and ')} meet again on ${JSON.stringify(after)}, ` +
    `media flowing ${tookMs} ms after the kill`);
  assert.equal(after.length, 1);
  assert.notEqual(after[0], host);
});

test('a draining node (SIGTERM) sends its pages to another node, where they meet again', { timeout: 180000 }, async () => {
  const room = 'drain';
  const fresh = {};
  for (const id of ['d', 'e', 'f']) {
    fresh[id] = await startServer('127.0.0.1:0', { args: ['--redis', `redis://127.0.0.1:${redisPort}`, '--node-id', id, '--drain-timeout', '5s'] });
    nodes[id] = fresh[id];
  }
  await waitFor('the new nodes registered', async () => {
    const r = await fetch(`${fresh.f.url}/api/nodes`);
    const ids = (await r.json()).nodes.map((n) => n.id);
    return ['d', 'e', 'f'].every((id) => ids.includes(id));
  }, 10000, 200);
  const ada = await openChromiumPage(browser, fresh.d, `room=${room}&name=Ada`);
  await waitFor('Ada joined', async () => (await pageState(ada.page)).state !== undefined, 20000);
  const bob = await openChromiumPage(browser, fresh.e, `room=${room}&name=Bob`);
  await Promise.all([waitConnected(ada, 1, 45000), waitConnected(bob, 1, 45000)]);
  for (const p of [ada, bob]) await expectMediaFlowing(p, { video: 1, audio: 1 });
  const r = await fetch(`${fresh.f.url}/api/nodes`);
  const host = (await r.json()).nodes.find((n) => n.rooms.includes(room))?.id;
  assert.ok(host, 'a node hosts the room');
  const joins = () => Promise.all([ada, bob].map((p) => p.page.evaluate(() => window.switchyard.joinsSent)));
  const before = await joins();

  const signalledAt = Date.now();
  const exited = new Promise((resolve) => fresh[host].child.once('exit', (code, signal) => resolve({ code, signal, ms: Date.now() - signalledAt })));
  fresh[host].child.kill('SIGTERM');
  await waitFor('both pages joined again (told to move)', async () => {
    const now = await joins();
    return now.every((n, i) => n > before[i]);
  }, 20000, 100);
  await Promise.all([ada, bob].map((p) => waitConnected(p, 1, 30000)));
  await Promise.all([ada, bob].map((p) => expectMediaFlowing(p, { video: 1, audio: 1 }, 30000)));
  const tookMs = Date.now() - signalledAt;
  const exit = await within(10000, exited);
  const after = await fetch(`${fresh[host === 'f' ? 'e' : 'f'].url}/api/nodes`);
  const live = (await after.json()).nodes;
  const newHost = live.find((n) => n.rooms.includes(room))?.id;
  console.log(`node ${host} drained: Ada and Bob meet again on node ${newHost}, media flowing ${tookMs} ms after SIGTERM; ` +
    `the node exited with ${JSON.stringify(exit)}`);
  assert.ok(exit && exit.code === 0, `the drained node stops cleanly: ${JSON.stringify(exit)}`);
  assert.ok(newHost && newHost !== host, 'the room moved to another node');
  assert.ok(!live.some((n) => n.id === host), 'the drained node left the registry');
});
