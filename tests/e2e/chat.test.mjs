// End-to-end: chat over the data channel of each page's one PeerConnection, in headless
// Chromium. Two pages talk (the panel, the unread badge, HTML shown as text); a third
// joins later and reads the history; the server refuses a flood, an oversized message
// and a data channel of another label, each with an error to that page only, and the
// room carries on. Loopback only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  E2E_OUT, openChromiumPage, serverStats, waitFor, waitConnected, withServerAndChromium,
} from './harness.mjs';

const CHAT_PANEL = path.join(E2E_OUT, 'chat-panel.png');
const PHONE_CHAT = path.join(E2E_OUT, 'phone-chat.png');

const env = withServerAndChromium('chat');

const messages = (page) => page.evaluate(() => window.switchyard.chat.messages());

test('chat: messages, unread badge, history for late joiners, refusals', { timeout: 150000 }, async () => {
  const ada = await openChromiumPage(env.browser, env.server, 'room=chat&name=Ada');
  const bob = await openChromiumPage(env.browser, env.server, 'room=chat&name=Bob');
  await waitConnected(ada, 1);
  await waitConnected(bob, 1);

  // Ada types in the panel; Bob's panel is closed, so his badge counts it.
  await ada.page.click('#chat-button');
  const html = '<img src=x onerror="window.pwned=1"><b>bold</b> & more';
  await ada.page.fill('#chat-input', html);
  await ada.page.press('#chat-input', 'Enter');
  const got = await waitFor("Ada's message at Bob's", async () => {
    const m = await messages(bob.page);
    return m.length === 1 && m[0];
  }, 15000);
  assert.equal(got.text, html);
  assert.equal(got.name, 'Ada');
  assert.ok(Math.abs(got.at - Date.now()) < 60000, 'a server time stamp');
  const shown = await bob.page.evaluate(() => {
    const text = document.querySelector('#chat-list .chat-text');
    return { text: text.textContent, elements: text.children.length, pwned: window.pwned ?? null,
      badge: document.getElementById('chat-badge').textContent, badgeHidden: document.getElementById('chat-badge').hidden };
  });
  assert.deepEqual(shown, { text: html, elements: 0, pwned: null, badge: '1', badgeHidden: false }, 'HTML is text; one unread');
  // The sender sees its own message once, confirmed by the server.
  await waitFor('Ada sees her message', async () => (await messages(ada.page)).length === 1, 10000);

  // Bob answers; opening the panel clears his badge.
  await bob.page.click('#chat-button');
  assert.equal(await bob.page.evaluate(() => window.switchyard.chat.unread), 0);
  await bob.page.fill('#chat-input', 'hi Ada 👋');
  await bob.page.click('#chat-form button[type=submit]');
  await waitFor("Bob's reply at Ada's", async () => (await messages(ada.page)).some((m) => m.text === 'hi Ada 👋'), 10000);

  // Cy joins later and reads both from the history, in order.
  const cy = await openChromiumPage(env.browser, env.server, 'room=chat&name=Cy');
  await waitConnected(cy, 2);
  const history = await waitFor('the history at Cy', async () => {
    const m = await messages(cy.page);
    return m.length === 2 && m;
  }, 15000);
  assert.deepEqual(history.map((m) => [m.name, m.text, m.history]), [['Ada', html, true], ['Bob', 'hi Ada 👋', true]]);
  await cy.page.click('#chat-button');
  await cy.page.screenshot({ path: CHAT_PANEL });

  // On a phone-sized window the panel covers the stage, nothing scrolls sideways, and the
  // message box is reachable from the keyboard alone.
  await cy.page.setViewportSize({ width: 390, height: 844 });
  await cy.page.evaluate(() => document.activeElement?.blur());
  let focused = null;
  for (let i = 0; i < 40 && focused !== 'chat-input'; i++) {
    await cy.page.keyboard.press('Tab');
    focused = await cy.page.evaluate(() => document.activeElement?.id ?? null);
  }
  assert.equal(focused, 'chat-input', 'Tab reaches the message box');
  await cy.page.keyboard.type('typed on a phone');
  await cy.page.keyboard.press('Enter');
  await waitFor("Cy's keyboard-only message at Ada's", async () => (await messages(ada.page)).some((m) => m.text === 'typed on a phone'), 10000);
  const phone = await cy.page.evaluate(() => {
    const box = document.getElementById('chat-input').getBoundingClientRect();
    return { overflow: document.documentElement.scrollWidth - window.innerWidth, inputVisible: box.bottom <= window.innerHeight && box.right <= window.innerWidth };
  });
  assert.deepEqual(phone, { overflow: 0, inputVisible: true }, `phone-sized: ${JSON.stringify(phone)}`);
  await cy.page.screenshot({ path: PHONE_CHAT });
  await cy.page.setViewportSize({ width: 1280, height: 720 });

  // Refusals reach the sender only, in its chat panel.
  const before = await serverStats(env.server);
  const tooLong = await bob.page.evaluate(() => window.switchyard.chat.send('x'.repeat(2001)));
  assert.ok(tooLong, 'sent (the page does not check when asked directly)');
  await waitFor('Bob is told the message is too long', () => bob.page.evaluate(() =>
    /at most 2000 characters/.test(document.getElementById('chat-error').textContent)), 10000);
  // A binary message (bytes that are not UTF-8 text) on the chat channel.
  await bob.page.evaluate(() => window.switchyard.chat.sendBinary(new Uint8Array([0xff, 0xfe, 0x3c])));
  await waitFor('Bob is told chat is text', () => bob.page.evaluate(() =>
    /binary messages are refused/.test(document.getElementById('chat-error').textContent)), 10000);
  await bob.page.evaluate(() => { for (let i = 0; i < 40; i++) window.switchyard.chat.send(`flood ${i}`); });
  await waitFor('Bob is told to slow down', () => bob.page.evaluate(() =>
    /too many chat messages/.test(document.getElementById('chat-error').textContent)), 10000);
  // A data channel of another label is closed by the server, with an error.
  await ada.page.evaluate(() => {
    const dc = window.switchyard.pc.createDataChannel('files');
    window.otherChannel = { closed: false };
    dc.onclose = () => { window.otherChannel.closed = true; };
  });
  await waitFor("Ada's 'files' channel refused", () => ada.page.evaluate(() =>
    window.otherChannel.closed && /"files" refused/.test(document.getElementById('chat-error').textContent)), 15000);
  const after = await serverStats(env.server);
  console.log(`[chat] relayed ${after.chat_messages - before.chat_messages}, refused ${after.chat_refused - before.chat_refused}`);
  assert.ok(after.chat_refused - before.chat_refused >= 2, 'the server counted the refusals');
  const flood = (await messages(cy.page)).filter((m) => m.text.startsWith('flood ')).length;
  assert.ok(flood >= 5 && flood < 40, `a flood is cut to the rate limit (${flood} of 40 relayed)`);
  assert.ok(!(await messages(cy.page)).some((m) => m.text.length > 2000), 'the oversized message went nowhere');

  // Nobody else saw an error, and the room carries on.
  assert.equal(await cy.page.evaluate(() => document.getElementById('chat-error').hidden), true);
  assert.equal(await cy.page.evaluate(() => document.getElementById('server-error').hidden), true);
  await waitFor('Bob can talk again after the flood', async () => {
    await bob.page.evaluate(() => window.switchyard.chat.send('still here'));
    return (await messages(ada.page)).some((m) => m.text === 'still here');
  }, 15000, 1500);
  for (const p of [ada, bob, cy]) await waitConnected(p, 2);

  for (const p of [ada, bob, cy]) await p.context.close();
});
