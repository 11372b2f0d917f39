// End-to-end: access tokens. The server runs with an API key; `switchyard token` (the
// real CLI) makes join links; two Chromium pages open them and meet; a link whose token
// another key signed is refused with `unauthorized`, shown on the page. Loopback only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import {
  SERVER_BIN, expectMediaFlowing, openChromiumPage, pageState, waitFor, waitConnected, withServerAndChromium,
} from './harness.mjs';

const KEY = 'APIe2e';
const SECRET = 'an end-to-end secret of 32 bytes at least';

const env = withServerAndChromium('token', { serverArgs: ['--api-keys', `${KEY}:${SECRET}`] });

// The join link the CLI prints (its second line), for the server under test.
function cliLink(identity, name, keys = `${KEY}:${SECRET}`, extra = []) {
  const out = execFileSync(SERVER_BIN, ['token', '--room', 'tokens', '--identity', identity, '--name', name,
    '--ttl', '10m', '--api-keys', keys, '--listen', new URL(env.server.url).host, ...extra], { timeout: 10000 }).toString();
  const [token, link] = out.trim().split('\n');
  assert.ok(token.split('.').length === 3, `a JWT: ${token}`);
  assert.equal(new URL(link).origin, env.server.url);
  return link;
}

test('pages join with links made by `switchyard token`; a forged one is refused', { timeout: 120000 }, async () => {
  const links = [cliLink('ada', 'Ada'), cliLink('bob', 'Bob')];
  const pages = [];
  for (const link of links) {
    pages.push(await openChromiumPage(env.browser, env.server, new URL(link).search.slice(1)));
  }
  for (const p of pages) await waitConnected(p, 1);
  const names = await pages[0].page.evaluate(() => [...document.querySelectorAll('.tile .name')].map((e) => e.textContent));
  assert.deepEqual([...names].sort(), ['Ada (you)', 'Bob'], `the names come from the tokens: ${names}`);
  const address = await pages[0].page.evaluate(() => location.href);
  assert.ok(!/token=/.test(address), `the token left the address bar: ${address}`);

  // Signed by a key the server does not have.
  const forged = cliLink('eve', 'Eve', `APIforger:${'f'.repeat(40)}`);
  const eve = await openChromiumPage(env.browser, env.server, new URL(forged).search.slice(1));
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
  const ada = await openChromiumPage(env.browser, env.server, new URL(cliLink('ada2', 'Ada')).search.slice(1));
  const cam = cliLink('cy', 'Cy', `${KEY}:${SECRET}`, ['--can-publish', 'camera,microphone']);
  const cy = await openChromiumPage(env.browser, env.server, new URL(cam).search.slice(1));
  for (const p of [ada, cy]) await waitConnected(p, 1);
  // The page hides the button its token does not allow; a page that shares anyway (a
  // modified client) is refused by the server.
  assert.equal(await cy.page.evaluate(() => document.getElementById('screen-button').hidden), true);
  assert.equal(await ada.page.evaluate(() => document.getElementById('screen-button').hidden), false);
  await cy.page.evaluate(() => { document.getElementById('screen-button').hidden = false; });
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

test('a subscribe-only token watches and listens without opening a camera', { timeout: 120000 }, async () => {
  const ada = await openChromiumPage(env.browser, env.server, new URL(cliLink('ada3', 'Ada')).search.slice(1));
  const zed = await openChromiumPage(env.browser, env.server,
    new URL(cliLink('zed', 'Zed', `${KEY}:${SECRET}`, ['--no-publish'])).search.slice(1));
  for (const p of [ada, zed]) await waitConnected(p, 1);
  await expectMediaFlowing(zed, { video: 1, audio: 1 });
  const own = await zed.page.evaluate(() => ({
    sending: window.switchyard.pc.getSenders().filter((x) => x.track).length,
    controls: ['mic-button', 'cam-button', 'screen-button'].map((id) => document.getElementById(id).hidden),
  }));
  assert.deepEqual(own, { sending: 0, controls: [true, true, true] }, 'no camera, no microphone, no publishing controls');
  // Ada sees Zed as muted with the camera off, and gets no error.
  await waitFor("Zed's tile at Ada's shows mic and camera off", () => ada.page.evaluate(() => {
    const t = document.querySelector('.tile.remote');
    return t?.dataset.audioMuted === 'true' && t.dataset.videoMuted === 'true';
  }), 10000);
  assert.equal(await zed.page.evaluate(() => document.getElementById('server-error').hidden), true);
  for (const p of [ada, zed]) await p.context.close();
});

test('an administrator revoking the screen grant stops a running share', { timeout: 120000 }, async () => {
  const ada = await openChromiumPage(env.browser, env.server, new URL(cliLink('ada4', 'Ada')).search.slice(1));
  const bob = await openChromiumPage(env.browser, env.server, new URL(cliLink('bob4', 'Bob')).search.slice(1));
  for (const p of [ada, bob]) await waitConnected(p, 1);
  await ada.page.click('#screen-button');
  await waitFor("Ada's screen at Bob's", async () => (await bob.page.evaluate(() => window.switchyard.screens())).length === 1, 20000);
  const adaId = await ada.page.evaluate(() => window.switchyard.participantId);
  const res = await fetch(`${env.server.url}/api/admin/rooms/tokens/participants/${adaId}/grants`, {
    method: 'PUT',
    headers: { authorization: `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ canPublish: true, canPublishSources: ['camera', 'microphone'], canSubscribe: true }),
    signal: AbortSignal.timeout(5000),
  });
  assert.equal(res.status, 200, await res.text());
  // Gone for Bob; Ada's page ends its share and says why; her camera still reaches Bob.
  await waitFor("Ada's screen gone at Bob's", async () => (await bob.page.evaluate(() => window.switchyard.screens())).length === 0, 10000);
  const adaSees = await waitFor('Ada told, her share ended', () => ada.page.evaluate(() => {
    const box = document.getElementById('server-error');
    const button = document.getElementById('screen-button').textContent;
    return !box.hidden && button === 'Share screen' && document.getElementById('server-error-text').textContent;
  }), 10000);
  assert.match(adaSees, /^forbidden: .*\(screen\)/);
  await expectMediaFlowing(bob, { video: 1, audio: 1 });
  for (const p of [ada, bob]) await p.context.close();
});
