// Shared pieces of the browser end-to-end tests: the server process, bounded waits,
// Chromium's flags and pages, and the media checks that read a page's WebRTC stats.
// Only loopback addresses are used, and every wait has a deadline.
//
//   SWITCHYARD_BIN   server binary (default: target/release/switchyard)
//   CHROMIUM_PATH    browser binary (default: /usr/bin/chromium)
//   E2E_WEB_DIR      development only: Chromium pages load the scripts and style.css from
//                    this folder instead of the copies built into the server, so a web
//                    change can be tried without a release build

import { spawn, spawnSync } from 'node:child_process';
import { after, before } from 'node:test';
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '../..');
export const E2E_OUT = path.join(repoRoot, 'target/e2e'); // logs and screenshots
export const SERVER_BIN = process.env.SWITCHYARD_BIN ?? path.join(repoRoot, 'target/release/switchyard');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection', // without it Chromium gathers no loopback candidates
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `check` until it returns a truthy value (other than an object with ok: false,
// which a check returns to explain itself) or `timeoutMs` passes; the last value seen
// goes into the failure message.
export async function waitFor(what, check, timeoutMs = 30000, everyMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last && last.ok !== false) return last;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

// Resolves `promise`, or undefined once `ms` have passed (for cleanup that must not hang).
export const within = (ms, promise) => Promise.race([promise, sleep(ms).then(() => undefined)]);

// ---------- server ----------

// Servers this process started and that are still running: killed (by PID) if the runner
// dies mid-test, so none is left behind.
const liveServers = new Set();
process.on('exit', () => {
  for (const child of liveServers) { try { child.kill('SIGKILL'); } catch { /* gone */ } }
});

// Starts the server on loopback and resolves { child, url, log } once it prints its
// "listening on" line (20 s at most). `prefix` runs it through another command that
// execs it (e.g. ['ip', 'netns', 'exec', NS]: the PID stays the server's); `args` are
// further flags (e.g. ['--media-ips', '127.0.100.1']).
export function startServer(listen = '127.0.0.1:0', { prefix = [], args = [] } = {}) {
  return new Promise((resolve, reject) => {
    const argv = [...prefix, SERVER_BIN, '--listen', listen, '--udp-port', '0', ...args];
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    liveServers.add(child);
    child.once('exit', () => liveServers.delete(child));
    const log = [];
    let buffered = '';
    let settled = false;
    const finish = (err, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) { child.kill('SIGKILL'); reject(err); } else resolve(value);
    };
    const timer = setTimeout(() => finish(new Error(
      `server printed no "listening on" line within 20 s:\n${log.join('\n')}`)), 20000);
    // Keep draining both pipes for the server's whole life so it never blocks on a full pipe.
    child.stdout.on('data', (chunk) => {
      buffered += chunk;
      const lines = buffered.split('\n');
      buffered = lines.pop();
      for (const line of lines) {
        log.push(line);
        const m = line.match(/listening on (http:\/\/127\.\d+\.\d+\.\d+:\d+)/);
        if (m) finish(null, { child, url: m[1], log });
      }
    });
    child.stderr.on('data', (chunk) => log.push(...String(chunk).split('\n').filter(Boolean)));
    child.on('error', (err) => finish(new Error(`cannot start ${SERVER_BIN}: ${err.message}`)));
    child.on('exit', (code, sig) => finish(new Error(
      `server exited (${code ?? sig}) before listening:\n${log.join('\n')}`)));
  });
}

// Stops the server (SIGTERM, then SIGKILL after 5 s) and writes its log to `logFile`,
// for reading after a failure.
export async function stopServer(server, logFile) {
  if (server?.log && logFile) {
    mkdirSync(path.dirname(logFile), { recursive: true });
    writeFileSync(logFile, server.log.join('\n') + '\n');
  }
  const child = server?.child;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  if (await Promise.race([exited.then(() => true), sleep(5000).then(() => false)])) return;
  child.kill('SIGKILL');
  await Promise.race([exited, sleep(2000)]);
}

// The server's own counters (GET /api/stats).
export async function serverStats(server) {
  const res = await fetch(`${server.url}/api/stats`, { signal: AbortSignal.timeout(5000) });
  return res.json();
}

// ---------- pages ----------

// Where a page's console goes: target/e2e/<prefix><query>.console.log (emptied first).
export function consoleLogFile(query, prefix = '') {
  // A token link's query is far longer than a file name may be: its end tells pages apart.
  const name = query.replace(/[^A-Za-z0-9=_-]/g, '_');
  const file = path.join(E2E_OUT, `${prefix}${name.length > 100 ? `${name.slice(0, 40)}-${name.slice(-40)}` : name}.console.log`);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, '');
  return (type, text) => appendFileSync(file, `${new Date().toISOString()} ${type}: ${text}\n`);
}

// A Chromium page (playwright-core) in its own context with camera and microphone
// granted, at <server>/?<query>, which joins straight away. `contextOptions` go to
// newContext (e.g. another viewport).
export async function openChromiumPage(browser, server, query, initScript, contextOptions = {}) {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 720 },
    permissions: ['camera', 'microphone'],
    ...contextOptions,
  });
  const page = await context.newPage();
  page.on('pageerror', (err) => console.log(`[page ${query}] uncaught: ${err.message}`));
  if (initScript) await page.addInitScript(initScript);
  const log = consoleLogFile(query);
  page.on('console', (m) => log(m.type(), m.text()));
  if (process.env.E2E_WEB_DIR) await serveWebFromDisk(context, process.env.E2E_WEB_DIR);
  const navigatedAt = Date.now();
  await page.goto(`${server.url}/?${query}`, { timeout: 15000 });
  // A browser launched into a network namespace may see its network change while the
  // first page loads (CI: net::ERR_NETWORK_CHANGED on the client's scripts, and the page
  // never joined). The client's script defines window.switchyard before the load event;
  // without it the page is loaded again, once, and says so.
  const loaded = () => page.waitForFunction(() => window.switchyard, null, { timeout: 5000 });
  if (!(await loaded().then(() => true, () => false))) {
    console.log(`RELOAD: the web client did not load for ${query}; loading the page again`);
    await page.reload({ timeout: 15000 });
    await loaded();
  }
  return { page, context, navigatedAt, query };
}

// E2E_WEB_DIR (development only): the web client's script and style from disk, not the
// binary's. Not the document: a page served by the test instead of the loopback server
// counts as public to Chromium's local network access checks, which then block its
// WebSocket to the server.
async function serveWebFromDisk(context, dir) {
  await context.route(/\/(\w+\.js|style\.css)$/, (route) => {
    const name = new URL(route.request().url()).pathname.slice(1);
    const type = name.endsWith('.css') ? 'text/css' : 'text/javascript';
    route.fulfill({ contentType: `${type}; charset=utf-8`, body: readFileSync(path.join(dir, name), 'utf8') });
  });
}

// ---------- media checks (work on playwright and puppeteer pages alike) ----------

// inbound-rtp counters of the page's current PeerConnection.
export function inboundStats(page) {
  return page.evaluate(async () => {
    const pc = window.switchyard?.pc;
    if (!pc) return [];
    const out = [];
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp') {
        out.push({ id: s.id, kind: s.kind ?? s.mediaType, framesDecoded: s.framesDecoded ?? 0,
          packetsReceived: s.packetsReceived ?? 0 });
      }
    });
    return out;
  });
}

// Per remote tile: the participant it shows and the inbound-rtp stats of its video
// (the receiver's own stats, so each figure belongs to that tile's track).
export function remoteVideoStats(page) {
  return page.evaluate(async () => {
    const pc = window.switchyard?.pc;
    if (!pc) return [];
    const out = [];
    for (const el of document.querySelectorAll('.tile.remote')) {
      const track = el.querySelector('video')?.srcObject?.getVideoTracks()[0];
      const transceiver = track && pc.getTransceivers().find((t) => t.receiver.track === track);
      if (!transceiver) continue;
      let s = null;
      (await transceiver.receiver.getStats()).forEach((r) => { if (r.type === 'inbound-rtp') s = r; });
      out.push({
        participantId: el.dataset.participantId,
        name: el.querySelector('.name')?.textContent,
        mid: transceiver.mid,
        framesDecoded: s?.framesDecoded ?? 0,
        frameWidth: s?.frameWidth ?? 0,
        frameHeight: s?.frameHeight ?? 0,
        bytesReceived: s?.bytesReceived ?? 0,
        packetsLost: s?.packetsLost ?? 0,
        at: Date.now(),
      });
    }
    return out;
  });
}

// The client's state as it shows it: window.switchyard and the connection badge.
export const pageState = (page) => page.evaluate(() => ({
  state: window.switchyard?.state,
  text: document.getElementById('conn-state')?.textContent,
  remoteTiles: window.switchyard?.remoteTileCount() ?? -1,
}));

// Media is flowing when, between two samples ~2 s apart, at least `video` inbound video
// streams decoded more frames and at least `audio` inbound audio streams got more packets.
// Retries the sample pair until the deadline. `p` is { page, query }.
export async function expectMediaFlowing(p, { video, audio }, timeoutMs = 30000) {
  let seen;
  try {
    return await waitFor(`${p.query}: ${video} video + ${audio} audio inbound streams rising`, async () => {
      const before = new Map((await inboundStats(p.page)).map((s) => [s.id, s]));
      await sleep(2000);
      const after = await inboundStats(p.page);
      const rising = (kind, field) => after.filter((s) =>
        s.kind === kind && before.has(s.id) && s[field] > before.get(s.id)[field]).length;
      const v = rising('video', 'framesDecoded');
      const a = rising('audio', 'packetsReceived');
      seen = { v, a, before: [...before.values()], after };
      return v >= video && a >= audio && { v, a };
    }, timeoutMs, 0);
  } catch (err) {
    err.message += `\nlast samples: ${JSON.stringify(seen)}`;
    throw err;
  }
}

// The page's ICE/DTLS view: SRTP cipher, the selected candidate pair's two ends, and the
// local candidates it gathered. Firefox marks the chosen pair with `selected` as well.
export function transportInfo(page) {
  return page.evaluate(async () => {
    const pc = window.switchyard?.pc;
    if (!pc) return null;
    const stats = [...(await pc.getStats()).values()];
    const transport = stats.find((s) => s.type === 'transport');
    const pairs = stats.filter((s) => s.type === 'candidate-pair');
    const pair = pairs.find((s) => s.id === transport?.selectedCandidatePairId)
      ?? pairs.find((s) => s.selected)
      ?? pairs.find((s) => s.nominated && s.state === 'succeeded');
    const byId = (id) => stats.find((s) => s.id === id);
    const end = (c) => c && { address: c.address ?? c.ip, port: c.port, type: c.candidateType, protocol: c.protocol,
      relayProtocol: c.relayProtocol };
    return {
      srtpCipher: transport?.srtpCipher,
      dtlsCipher: transport?.dtlsCipher,
      iceState: transport?.iceState ?? pc.iceConnectionState,
      local: end(byId(pair?.localCandidateId)),
      remote: end(byId(pair?.remoteCandidateId)),
      localCandidates: stats.filter((s) => s.type === 'local-candidate')
        .map((c) => `${c.protocol} ${c.address ?? c.ip}:${c.port} ${c.candidateType}`),
    };
  });
}

// True for an IPv4 address in 127.0.0.0/8, where everything in these tests stays.
export const inLoopbackNet = (address) => typeof address === 'string' && /^127\.\d+\.\d+\.\d+$/.test(address);

// ---------- one test file's server and browser ----------

// Starts the server and a headless Chromium before the file's tests and stops both after
// them, keeping the server's log in target/e2e/<name>-server.log. Returns an object whose
// `server` and `browser` are set once the tests run.
export function withServerAndChromium(name, { serverArgs = [], chromiumArgs = CHROMIUM_ARGS } = {}) {
  const env = { server: null, browser: null };
  before(async () => {
    env.server = await startServer('127.0.0.1:0', { args: serverArgs });
    env.browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: chromiumArgs, timeout: 30000 });
  });
  after(async () => {
    await within(15000, env.browser?.close().catch(() => {}));
    await stopServer(env.server, path.join(E2E_OUT, `${name}-server.log`));
  });
  return env;
}

// Waits until page `p` ({page, query}) is connected and shows `remoteTiles` others.
export const waitConnected = (p, remoteTiles, timeoutMs = 30000) =>
  waitFor(`${p.query.slice(0, 40)}: connected with ${remoteTiles} remote tiles`, async () => {
    const s = await pageState(p.page);
    return s.state === 'connected' && s.remoteTiles === remoteTiles ? s : { ok: false, ...s };
  }, timeoutMs);

// Milliseconds from opening the page `p` ({ page, navigatedAt, query }) to its first
// decoded remote video frame.
export async function firstFrameAfterOpen(p, timeoutMs = 45000) {
  await waitFor(`${p.query}: a first decoded frame`, async () =>
    (await inboundStats(p.page)).some((s) => s.kind === 'video' && s.framesDecoded > 0), timeoutMs, 50);
  return Date.now() - p.navigatedAt;
}

// A self-signed certificate for `ip`, made by openssl in `dir` (never a real one):
// { cert, key } file paths. Throws when openssl fails.
export function makeTestCertificate(dir, ip) {
  mkdirSync(dir, { recursive: true });
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', `/CN=${ip}`,
    '-addext', `subjectAltName=IP:${ip}`], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`openssl could not make the test certificate: ${made.stderr ?? made.error}`);
  return { cert, key };
}

// A free TCP port on 127.0.0.1 (for a helper server the test starts: coturn, Redis).
export const freePort = () => new Promise((resolve, reject) => {
  const s = createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});
