// The `/dev` page of `serve --dev` in headless Chromium (Debian's
// `chromium`, driven by playwright-core; nothing downloads a browser): the
// page connects by itself, a simulated call appears on it, a message sent
// from its form comes back as an event. A screenshot is kept as a test
// artifact (CALLBRIDGE_ARTIFACTS, default target/artifacts).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';


import { artifacts, launchChromium } from './chromium.js';
import { Daemon } from '../integration/harness.js';


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

test('the /dev page connects, shows a simulated call and a sent message', { timeout: 60_000 }, async () => {
  // The page's certificate is the dev CA's: trust it as a user would by
  // accepting it (the CA is not in Chromium's store).
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1200, height: 800 } });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  await page.goto(`${d.base}/dev`);
  await page.waitForSelector('#state[data-state="connected"]', { timeout: 15_000 });
  assert.match(await page.textContent('#who'), /demo/);

  await d.callEvent('call.initiated', 'v3:browser-call');
  await page.waitForSelector('#calls tr[data-call="v3:browser-call"]', { timeout: 10_000 });
  const row = await page.textContent('#calls tr[data-call="v3:browser-call"]');
  assert.match(row, /ringing/);
  assert.match(await page.textContent('#events'), /call-initiated/);
  await d.callEvent('call.answered', 'v3:browser-call');
  await page.waitForFunction(
    () => document.querySelector('#calls tr[data-call="v3:browser-call"]')?.textContent?.includes('answered'),
    null,
    { timeout: 10_000 },
  );

  await page.fill('#message-text', 'hello from the browser');
  await page.click('#message button');
  await page.waitForFunction(() => document.querySelector('#message-result')?.textContent?.startsWith('sent'), null, {
    timeout: 10_000,
  });
  await page.waitForFunction(() => document.querySelector('#events')?.textContent?.includes('hello from the browser'), null, {
    timeout: 10_000,
  });

  await page.selectOption('#status', 'busy');
  await page.waitForFunction(() => document.querySelector('#status-result')?.textContent === 'saved: busy', null, {
    timeout: 10_000,
  });
  const user = await d.admin('GET', '/api/users/demo');
  assert.equal(user.body.status, 'busy');

  fs.mkdirSync(artifacts, { recursive: true });
  const shot = path.join(artifacts, 'dev-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(fs.statSync(shot).size > 1000, 'screenshot written');
  assert.deepEqual(consoleErrors, []);
  await context.close();
});

