// End-to-end: the pre-join screen and switching devices in a call, in headless Chromium
// with two fake cameras. The preview plays, the microphone meter moves, the pickers list
// the devices; "join muted" is honoured and remembered; switching cameras mid-call goes
// by replaceTrack (no new offer) and the other page keeps decoding. Loopback only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  CHROMIUM_ARGS, E2E_OUT, consoleLogFile, openChromiumPage, pageState, remoteVideoStats, sleep, waitFor, withServerAndChromium,
} from './harness.mjs';

const PREJOIN_SCREENSHOT = path.join(E2E_OUT, 'prejoin.png');
// Chromium's fake capture makes as many cameras as device-count says.
const ARGS = CHROMIUM_ARGS.map((a) => (a === '--use-fake-device-for-media-stream'
  ? '--use-fake-device-for-media-stream=device-count=2' : a));

const env = withServerAndChromium('devices', { chromiumArgs: ARGS });

test('pre-join preview, pickers and join muted; a camera switch without renegotiating', { timeout: 120000 }, async () => {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 800 }, permissions: ['camera', 'microphone'] });
  const ada = await context.newPage();
  const log = consoleLogFile('devices-ada');
  ada.on('console', (m) => log(m.type(), m.text()));
  await ada.goto(`${env.server.url}/`, { timeout: 15000 });

  // The pre-join screen.
  const prejoin = await waitFor('the preview plays and both cameras are listed', () => ada.evaluate(() => {
    const v = document.getElementById('preview');
    const cams = [...document.querySelectorAll('#prejoin-camera option')].map((o) => o.value);
    return v.videoWidth > 0 && cams.length === 2 && { width: v.videoWidth, cams };
  }), 20000);
  const level = await waitFor('the microphone meter moves', () => ada.evaluate(() =>
    Number(document.getElementById('mic-level').value) > 0.01 && Number(document.getElementById('mic-level').value)), 10000);
  console.log(`[prejoin] preview ${prejoin.width} px wide, cameras ${prejoin.cams.length}, mic level ${level.toFixed(2)}`);
  await ada.check('#join-muted');
  await ada.fill('#room-input', 'devices');
  await ada.fill('#name-input', 'Ada');
  await ada.screenshot({ path: PREJOIN_SCREENSHOT });
  await ada.click('#join-button');

  const bob = await openChromiumPage(env.browser, env.server, 'room=devices&name=Bob');
  for (const [name, page] of [['Ada', ada], ['Bob', bob.page]]) {
    await waitFor(`${name}: connected with one remote tile`, async () => {
      const s = await pageState(page);
      return s.state === 'connected' && s.remoteTiles === 1 && s;
    }, 30000);
  }
  // Bob sees Ada muted: she joined that way.
  await waitFor('Bob shows Ada muted', () => bob.page.evaluate(() =>
    document.querySelector('.tile.remote')?.dataset.audioMuted === 'true'), 10000);
  assert.equal(await ada.evaluate(() => document.getElementById('mic-button').textContent), 'Unmute');

  // Bob decodes Ada's video; then Ada switches to the other camera and back. Headless
  // Chromium's second fake camera (fake_device_1) plays in a <video> but its frames never
  // reach the encoder (a clone of the first camera's track keeps encoding, so it is that
  // device, not replaceTrack); the frames Bob decodes after the switch back are the check.
  const decoded = async () => (await remoteVideoStats(bob.page))[0]?.framesDecoded ?? 0;
  await waitFor('Bob decodes Ada', async () => (await decoded()) > 30, 20000);
  const offersBefore = await ada.evaluate(() => window.switchyard.offersSent);
  const sending = () => ada.evaluate(() =>
    window.switchyard.pc.getSenders().find((s) => s.track?.kind === 'video')?.track.getSettings().deviceId);
  const first = await sending();
  const other = await ada.evaluate((current) => [...document.getElementById('camera-select').options]
    .map((o) => o.value).find((v) => v !== current), first);
  assert.ok(other, 'a second camera to switch to');
  await ada.selectOption('#camera-select', other);
  await waitFor('Ada sends from the other camera', async () => (await sending()) === other, 10000);
  await ada.selectOption('#camera-select', first);
  await waitFor('Ada sends from the first camera again', async () => (await sending()) === first, 10000);
  const framesAtSwitch = await decoded();
  await sleep(3000);
  const framesAfter = await decoded();
  const offersAfter = await ada.evaluate(() => window.switchyard.offersSent);
  console.log(`[switch] Bob decoded ${framesAfter - framesAtSwitch} frames in the 3 s after the switches; Ada's offers ${offersBefore} -> ${offersAfter}`);
  assert.ok(framesAfter - framesAtSwitch > 20, `Bob kept decoding (${framesAtSwitch} -> ${framesAfter})`);
  assert.equal(offersAfter, offersBefore, 'no renegotiation');

  // Remembered: a new visit preselects the camera and "join muted".
  await ada.click('#leave-button');
  await ada.goto(`${env.server.url}/`, { timeout: 15000 });
  const remembered = await waitFor('the choices come back', () => ada.evaluate(() => {
    const cams = document.getElementById('prejoin-camera');
    return cams.options.length === 2 && { camera: cams.value, muted: document.getElementById('join-muted').checked };
  }), 15000);
  assert.deepEqual(remembered, { camera: first, muted: true });
  await context.close();
  await bob.context.close();
});
