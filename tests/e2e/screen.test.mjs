// End-to-end: screen sharing in headless Chromium (its fake screen: the fake-device and
// fake-UI flags make getDisplayMedia answer without a picker). Ada shares; Bob and Cy
// show her screen as the spotlight tile, decoding frames, with the cameras in a strip.
// Bob shares too: two screens, the later one in the spotlight. Ada's browser ends her
// share (the track's `ended`, as its "Stop sharing" bar does) and Bob presses his
// button: both screens leave every page. Loopback only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  E2E_OUT, openChromiumPage, waitFor, waitConnected, withServerAndChromium,
} from './harness.mjs';

const SCREEN_SHARE = path.join(E2E_OUT, 'screen-share.png');

const env = withServerAndChromium('screen');

// The page's remote screens with the frames their receivers decoded.
const screenStats = (page) => page.evaluate(async () => {
  const pc = window.switchyard.pc;
  const out = [];
  for (const s of window.switchyard.screens()) {
    const el = document.querySelector(`.tile.screen[data-track-id="${s.trackId}"]`);
    const track = el?.querySelector('video')?.srcObject?.getVideoTracks()[0];
    const transceiver = track && pc.getTransceivers().find((t) => t.receiver.track === track);
    let frames = 0;
    let width = 0;
    if (transceiver) (await transceiver.receiver.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp') { frames = r.framesDecoded ?? 0; width = r.frameWidth ?? 0; }
    });
    const box = el?.getBoundingClientRect();
    out.push({ ...s, frames, width, tileWidth: Math.round(box?.width ?? 0) });
  }
  return out;
});

// Waits until `page` shows exactly the screens of `owners` (participant ids), the
// `spotlight` one large and decoding frames.
async function expectScreens(name, page, owners, spotlight) {
  const first = await waitFor(`${name}: screens of ${owners.join(', ') || 'nobody'}`, async () => {
    const s = await screenStats(page);
    const ids = s.map((x) => x.participantId).sort();
    return JSON.stringify(ids) === JSON.stringify([...owners].sort()) && s;
  }, 20000);
  if (!spotlight) return first;
  return waitFor(`${name}: ${spotlight}'s screen in the spotlight, decoding`, async () => {
    const a = await screenStats(page);
    await new Promise((r) => setTimeout(r, 1000));
    const b = await screenStats(page);
    const spot = b.find((x) => x.spotlight);
    const before = a.find((x) => x.trackId === spot?.trackId);
    const camerasWidest = await page.evaluate(() => Math.max(...[...document.querySelectorAll('.tile:not(.screen)')]
      .map((t) => t.getBoundingClientRect().width)));
    return spot?.participantId === spotlight && before && spot.frames > before.frames && spot.tileWidth > 2 * camerasWidest
      && { spot, camerasWidest };
  }, 20000);
}

test('screen share: spotlight, two sharers, stopping ends it for everyone', { timeout: 150000 }, async () => {
  const pages = {};
  for (const name of ['Ada', 'Bob', 'Cy']) pages[name] = await openChromiumPage(env.browser, env.server, `room=screens&name=${name}`);
  for (const p of Object.values(pages)) await waitConnected(p, 2);
  const id = {};
  for (const [name, p] of Object.entries(pages)) id[name] = await p.page.evaluate(() => window.switchyard.participantId);

  await pages.Ada.page.click('#screen-button');
  for (const name of ['Bob', 'Cy']) {
    const seen = await expectScreens(name, pages[name].page, [id.Ada], id.Ada);
    console.log(`[${name}] Ada's screen: ${JSON.stringify(seen)}`);
  }
  // The sharer sees its own screen in its strip, not as a remote screen.
  assert.deepEqual(await screenStats(pages.Ada.page), []);
  assert.equal(await pages.Ada.page.evaluate(() => document.querySelectorAll('.tile.local.screen').length), 1);
  await pages.Bob.page.screenshot({ path: SCREEN_SHARE });

  // A second sharer: both screens, the later in the spotlight.
  await pages.Bob.page.click('#screen-button');
  await expectScreens('Cy', pages.Cy.page, [id.Ada, id.Bob], id.Bob);
  await expectScreens('Ada', pages.Ada.page, [id.Bob], id.Bob);

  // Ada's browser ends her share (its own "Stop sharing"): gone for everyone.
  await pages.Ada.page.evaluate(() => {
    const t = window.switchyard.pc.getTransceivers().find((x) => x.sender.track?.label.startsWith('screen'));
    t.sender.track.stop();
    t.sender.track.dispatchEvent(new Event('ended'));
  });
  await expectScreens('Cy', pages.Cy.page, [id.Bob], id.Bob);
  await expectScreens('Bob', pages.Bob.page, []);
  // Bob stops with the button.
  await pages.Bob.page.click('#screen-button');
  for (const name of ['Ada', 'Cy']) await expectScreens(name, pages[name].page, []);
  assert.equal(await pages.Bob.page.evaluate(() => document.getElementById('screen-button').textContent), 'Share screen');
  // Back to the grid with everyone's camera.
  await waitFor('Cy: no spotlight, two camera tiles', () => pages.Cy.page.evaluate(() =>
    document.getElementById('grid').dataset.layout === 'grid' && document.querySelectorAll('.tile.remote:not(.screen)').length === 2), 10000);
  for (const p of Object.values(pages)) await p.context.close();
});
