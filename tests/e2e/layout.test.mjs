// End-to-end: the meeting's layouts and room tools in headless Chromium. Three pages
// meet; one switches to speaker view (one remote tile large, the spotlight), opens the
// participant list (names and mute states, which follow a mute), copies an invite link,
// and sees a connection-quality hint on each received video. Loopback only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  E2E_OUT, openChromiumPage, waitFor, waitConnected, withServerAndChromium,
} from './harness.mjs';

const SPEAKER_VIEW = path.join(E2E_OUT, 'speaker-view.png');

const env = withServerAndChromium('layout');

test('speaker view, participant list, invite link and quality hints', { timeout: 120000 }, async () => {
  const names = ['Ada', 'Bob', 'Cy'];
  const pages = [];
  for (const name of names) {
    pages.push(await openChromiumPage(env.browser, env.server, `room=layout&name=${name}`, undefined,
      { permissions: ['camera', 'microphone', 'clipboard-read', 'clipboard-write'] }));
  }
  for (const p of pages) await waitConnected(p, 2);
  const ada = pages[0].page;

  // Speaker view: exactly one remote tile is the spotlight, and it is larger.
  await ada.click('#layout-button');
  const layout = await waitFor('a spotlight tile', () => ada.evaluate(() => {
    const spot = document.querySelectorAll('.tile.remote.spotlight');
    if (spot.length !== 1) return false;
    const others = [...document.querySelectorAll('.tile')].filter((t) => !t.classList.contains('spotlight'));
    const w = (el) => el.getBoundingClientRect().width;
    return { layout: window.switchyard.layout, spotlight: w(spot[0]), largestOther: Math.max(...others.map(w)),
      speakers: window.switchyard.speakers, spotId: spot[0].dataset.participantId, me: window.switchyard.participantId };
  }), 10000);
  console.log(`[speaker view] ${JSON.stringify(layout)}`);
  assert.equal(layout.layout, 'speaker');
  assert.ok(layout.spotlight > 2 * layout.largestOther, `the spotlight is large: ${JSON.stringify(layout)}`);
  // The loudest other participant (our own voice is never our spotlight).
  const loudestOther = layout.speakers.find((id) => id !== layout.me);
  if (loudestOther) assert.equal(layout.spotId, loudestOther, 'the dominant remote speaker is the spotlight');
  await ada.screenshot({ path: SPEAKER_VIEW });

  // The participant list, and a mute that shows in it.
  await ada.click('#people-button');
  const people = await waitFor('three people listed', () => ada.evaluate(() => {
    const items = [...document.querySelectorAll('#people-list li .person-name')].map((e) => e.textContent);
    return items.length === 3 && items;
  }), 10000);
  assert.deepEqual([...people].sort(), ['Ada (you)', 'Bob', 'Cy']);
  await pages[1].page.click('#mic-button'); // Bob mutes
  await waitFor("Bob's mute in Ada's list", () => ada.evaluate(() => [...document.querySelectorAll('#people-list li')]
    .some((li) => li.querySelector('.person-name').textContent === 'Bob' && li.dataset.audioMuted === 'true')), 10000);

  // The invite link.
  await ada.click('#invite-button');
  const notice = await waitFor('the invite link is shown', () => ada.evaluate(() =>
    document.getElementById('notice').textContent.includes('/?room=layout') && document.getElementById('notice').textContent), 5000);
  assert.match(notice, /^Invite link( copied)?: http:\/\/127\.0\.0\.1:\d+\/\?room=layout$/);

  // A quality hint on each received video (loopback: good).
  const quality = await waitFor('quality hints', () => ada.evaluate(() => {
    const q = [...document.querySelectorAll('.tile.remote')].map((t) => t.dataset.quality);
    return q.length === 2 && q.every(Boolean) && q;
  }), 15000);
  console.log(`[quality] ${quality.join(', ')}`);
  assert.ok(quality.every((q) => ['good', 'fair', 'poor'].includes(q)));
  for (const p of pages) await p.context.close();
});
