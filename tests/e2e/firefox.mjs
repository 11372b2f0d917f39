// Headless Firefox for the end-to-end tests (puppeteer-core over WebDriver BiDi, Debian's
// firefox-esr, never a downloaded one): launching it with the preferences that let it
// meet a server on loopback, opening a page, and closing it.
//
//   FIREFOX_PATH     browser binary (default: /usr/bin/firefox-esr)

import puppeteer from 'puppeteer-core';
import { consoleLogFile, within } from './harness.mjs';

export const FIREFOX = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr';

// Firefox 153 ESR, headless, fake camera/microphone, ICE on loopback:
// - Fake devices do not count as "capturing or has a permission" for Firefox's ICE, so
//   without a persistent camera/microphone permission it gathers in default-route-only
//   mode: one host candidate per family on the default route (the interface that
//   reaches 8.8.8.8, because the page's server is on loopback), and never loopback.
//   `permissions.default.*` = 1 (allow) is that permission; it also turns off mDNS
//   obfuscation of host candidates.
// - `media.peerconnection.ice.loopback` then adds 127.0.0.1 (and ::1) to the gathered
//   candidates. Firefox only pairs a loopback local candidate with a loopback remote
//   one, so the pair with the server's 127.0.0.1 candidate is loopback at both ends
//   (asserted below from the page's stats).
// - `media.peerconnection.ice.force_interface` is not used: this Firefox never applies
//   it (its nICEr log shows no forced interface whatever the pref says).
// - ICE-TCP off, so the pair is UDP (ice-tcp.test.mjs turns it on and forces it), and
//   autoplay allowed, as a participant clicking
//   "join" would have it.
export const FIREFOX_PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'permissions.default.camera': 1,
  'permissions.default.microphone': 1,
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.peerconnection.ice.tcp': false,
  'media.autoplay.default': 0,
};

// `prefs` are added to (or override) FIREFOX_PREFS.
export function launchFirefox(prefs = {}) {
  return puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    timeout: 60000,
    protocolTimeout: 60000,
    extraPrefsFirefox: { ...FIREFOX_PREFS, ...prefs },
  });
}

// Closes `firefox`; one that does not quit in time is killed by its PID.
export async function closeFirefox(firefox) {
  if (!firefox) return;
  const proc = firefox.process();
  await within(15000, firefox.close().catch(() => {}));
  if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
}

// A Firefox page at <server>/?<query>, which joins straight away.
export async function openFirefoxPage(firefox, server, query) {
  const page = await firefox.newPage();
  await page.setViewport({ width: 1280, height: 720 });
  const log = consoleLogFile(query, 'firefox-');
  page.on('console', (m) => log(m.type(), m.text()));
  page.on('pageerror', (err) => console.log(`[firefox ${query}] uncaught: ${err.message ?? err}`));
  const navigatedAt = Date.now();
  await page.goto(`${server.url}/?${query}`, { timeout: 15000 });
  return { page, navigatedAt, query };
}
