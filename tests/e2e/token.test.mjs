// End-to-end: access tokens. The server runs with an API key; `switchyard token` (the
// real CLI) makes join links; two Chromium pages open them and meet; a link whose token
// another key signed is refused with `unauthorized`, shown on the page. Loopback only.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, E2E_OUT, SERVER_BIN, openChromiumPage, pageState, startServer, stopServer, waitFor,
} from './harness.mjs';

const KEY = 'APIe2e';
const SECRET = 'an end-to-end secret of 32 bytes at least';
const SERVER_LOG = path.join(E2E_OUT, 'token-server.log');

let server;
let browser;

before(async () => {
  server = await startServer('127.0.0.1:0', { args: ['--api-keys', `${KEY}:${SECRET}`] });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
});

after(async () => {
  await browser?.close().catch(() => {});
  await stopServer(server, SERVER_LOG);
});

// The join link the CLI prints (its second line), for the server under test.
function cliLink(identity, name, keys = `${KEY}:${SECRET}`, extra = []) {
  const out = execFileSync(SERVER_BIN, ['token', '--room', 'tokens', '--identity', identity, '--name', name,
    '--ttl', '10m', '--api-keys', keys, '--listen', new URL(server.url).host, ...extra], { timeout: 10000 }).toString();
  const [token, link] = out.trim().split('\n');
  assert.ok(token.split('.').length === 3, `a JWT: ${token}`);
  assert.equal(new URL(link).origin, server.url);
  return link;
}

test('pages join with links made by `switchyard token`; a forged one is refused', { timeout: 120000 }, async () => {
  const links = [cliLink('ada', 'Ada'), cliLink('bob', 'Bob')];
  const pages = [];
  for (const link of links) {
    pages.push(await openChromiumPage(browser, server, new URL(link).search.slice(1)));
  }
  for (const p of pages) {
    await waitFor(`${p.query.slice(0, 20)}...: connected with one remote tile`, async () => {
      const s = await pageState(p.page);
      return s.state === 'connected' && s.remoteTiles === 1 && s;
    }, 30000);
  }
  const names = await pages[0].page.evaluate(() => [...document.querySelectorAll('.tile .name')].map((e) => e.textContent));
  assert.deepEqual([...names].sort(), ['Ada (you)', 'Bob'], `the names come from the tokens: ${names}`);

  // Signed by a key the server does not have.
  const forged = cliLink('eve', 'Eve', `APIforger:${'f'.repeat(40)}`);
  const eve = await openChromiumPage(browser, server, new URL(forged).search.slice(1));
  const shown = await waitFor('Eve: the refusal is shown', async () => {
    const text = await eve.page.evaluate(() => {
      const box = document.getElementById('server-error');
      return box && !box.hidden ? document.getElementById('server-error-text').textContent : null;
    });
    return text;
  }, 15000);
  assert.match(shown, /^unauthorized: /);
  const s = await pageState(pages[0].page);
  assert.equal(s.remoteTiles, 1, 'Eve never appeared to the others');
  for (const p of [...pages, eve]) await p.context.close();
});

test('a token without the screen source cannot share a screen', { timeout: 120000 }, async () => {
  const ada = await openChromiumPage(browser, server, new URL(cliLink('ada2', 'Ada')).search.slice(1));
  const cam = cliLink('cy', 'Cy', `${KEY}:${SECRET}`, ['--can-publish', 'camera,microphone']);
  const cy = await openChromiumPage(browser, server, new URL(cam).search.slice(1));
  for (const p of [ada, cy]) {
    await waitFor('connected with one remote tile', async () => {
      const st = await pageState(p.page);
      return st.state === 'connected' && st.remoteTiles === 1;
    }, 30000);
  }
  await cy.page.click('#screen-button');
  const shown = await waitFor('Cy: the refusal is shown', () => cy.page.evaluate(() => {
    const box = document.getElementById('server-error');
    return !box.hidden && document.getElementById('server-error-text').textContent;
  }), 15000);
  assert.match(shown, /^forbidden: .*\(screen\)/);
  // Ada never gets it, and Cy's camera still reaches her.
  await new Promise((r) => setTimeout(r, 2000));
  assert.deepEqual(await ada.page.evaluate(() => window.switchyard.screens()), []);
  assert.equal((await pageState(ada.page)).remoteTiles, 1);
  for (const p of [ada, cy]) await p.context.close();
});
