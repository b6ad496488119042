// The operator's console, `/console`, in headless Chromium (Debian's
// `chromium`, driven by playwright-core; nothing downloads a browser): the
// release daemon in --dev with an admin token; the page asks for the
// token, then shows a call that `callbridge simulate` posts appear, become
// answered and leave, the webhooks chart's figure rise above 0, the demo
// user online once a dialer connects; a wrong token goes back to the
// form; log out forgets the token. A screenshot is kept as a test
// artifact (CALLBRIDGE_ARTIFACTS, default target/artifacts).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';


import { artifacts, launchChromium } from './chromium.js';
import { ADMIN, BIN, DEMO_PHONE, Daemon } from '../integration/harness.js';

const run = promisify(execFile);

let d;
let browser;

before(async () => {
  d = await Daemon.start();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await d?.stop();
});

/** `callbridge simulate EVENT --to <demo's number> --call CALL`, as an operator types it. */
async function simulate(event, call) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CALLBRIDGE_')));
  const { stdout } = await run(BIN, ['simulate', event, '--to', DEMO_PHONE, '--call', call], {
    env: { ...env, CALLBRIDGE_DATA_DIR: d.dir, CALLBRIDGE_LISTEN: `127.0.0.1:${d.port}` },
  });
  assert.match(stdout, /^HTTP 200/);
}

const row = (call) => `#calls tr[data-call="${call}"]`;

test('the console logs in, shows a simulated call live, rates and presence', { timeout: 90_000 }, async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 1000 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${d.base}/console`);

  // A wrong token: refused, back at the form with the reason, nothing kept.
  await page.fill('#token', 'not-the-admin-token-at-all');
  await page.click('#login-form button');
  await page.waitForFunction(() => document.querySelector('#login-message')?.textContent?.includes('401'), null, {
    timeout: 15_000,
  });
  assert.equal(await page.isVisible('#login'), true);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);

  await page.fill('#token', ADMIN);
  await page.click('#login-form button');
  await page.waitForSelector('#state[data-state="live"]', { timeout: 15_000 });
  await page.waitForSelector('#users tr[data-user="demo"]', { timeout: 10_000 });
  // The token is in this tab's sessionStorage, nowhere else.
  assert.equal(await page.evaluate((t) => Object.values(sessionStorage).includes(t), ADMIN), true);
  assert.equal(await page.evaluate(() => localStorage.length), 0);

  const call = `v3:console-${Date.now()}`;
  await simulate('call.initiated', call);
  await page.waitForSelector(`${row(call)}[data-state="ringing"]`, { timeout: 15_000 });
  const ringing = await page.textContent(row(call));
  assert.match(ringing, /demo/);
  assert.match(ringing, /call-initiated/);
  await simulate('call.answered', call);
  await page.waitForSelector(`${row(call)}[data-state="answered"]`, { timeout: 15_000 });
  assert.match(await page.textContent(row(call)), /call-answered/);

  // A dialer connects: the demo user turns online.
  const ws = new d.WebSocket(`wss://127.0.0.1:${d.port}/ws?token=${d.token()}`);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  await page.waitForSelector('#users tr[data-user="demo"][data-online="true"]', { timeout: 15_000 });

  // The webhooks chart: the daemon's per-second count, peak above 0.
  await page.waitForFunction(() => Number(document.getElementById('chart-webhooks')?.dataset.peak) > 0, null, {
    timeout: 15_000,
  });
  assert.match(await page.textContent('#chart-webhooks-now'), /peak [1-9]/);
  assert.ok((await page.$$('#chart-webhooks-svg path')).length >= 1, 'a line is drawn');

  fs.mkdirSync(artifacts, { recursive: true });
  const shot = path.join(artifacts, 'console-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(fs.statSync(shot).size > 1000, 'screenshot written');

  await simulate('call.hangup', call);
  await page.waitForSelector(row(call), { state: 'detached', timeout: 15_000 });
  ws.close();

  // Log out: the token is forgotten and the form is back.
  await page.click('#logout');
  assert.equal(await page.isVisible('#login'), true);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  assert.deepEqual(pageErrors, []);
  await context.close();
});
