// The `/dev` page's call buttons, dial box and typing signals in headless
// Chromium (Debian's `chromium`, driven by playwright-core), against the
// release daemon in `serve --dev` with no Telnyx key: its built-in
// stand-in answers the buttons and posts the webhooks Telnyx would. A call
// that `callbridge simulate` made is answered, transferred and hung up
// from the page (and leaves the list), a dialled call appears and is
// answered, typing in the message box signals a second client (the
// package in Node, connected as demo) and that client's typing shows on
// the page. A screenshot is kept as a test artifact (CALLBRIDGE_ARTIFACTS,
// default target/artifacts).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';


import { CallbridgeClient } from '../../dist/index.js';
import { artifacts, launchChromium } from './chromium.js';
import { DEMO, Daemon, sleep, until } from '../integration/harness.js';


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

const row = (call) => `#calls tr.call[data-call="${call}"]`;
const button = (call, action) => `#calls tr[data-actions-for="${call}"] button[data-action="${action}"]`;
const result = (call) => `#calls tr[data-actions-for="${call}"] .result`;

/** Wait until the page's `selector` has text matching `re` (a string: includes). */
function waitText(page, selector, re, timeout = 10_000) {
  return page.waitForFunction(
    ([s, source, flags]) => new RegExp(source, flags).test(document.querySelector(s)?.textContent ?? ''),
    [selector, re.source, re.flags],
    { timeout },
  );
}

/** The cells of a call's row: [call, direction, from, to, state]. */
const cells = (page, call) => page.$$eval(`${row(call)} td`, (tds) => tds.map((td) => td.textContent));

test('the /dev page answers, transfers, hangs up and dials; typing signals both ways', { timeout: 120_000 }, async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${d.base}/dev`);
  await page.waitForSelector('#state[data-state="connected"]', { timeout: 15_000 });

  // An incoming call, as an operator simulates one: ringing, then answered
  // with the page's button.
  const call = 'v3:page-actions';
  await d.simulate('call.initiated', call);
  await page.waitForSelector(row(call), { timeout: 10_000 });
  assert.deepEqual(await cells(page, call), [call, 'inbound', '+15551230001', '+15550000001', 'ringing']);
  // Transfer without a number: refused on the call's line, nothing sent.
  await page.click(button(call, 'transfer'));
  await waitText(page, result(call), /^transfer refused: enter a number to transfer to$/);
  assert.ok(await page.$eval(result(call), (e) => e.classList.contains('error')));
  await page.click(button(call, 'answer'));
  await waitText(page, result(call), /^answer: \{"result":"ok"\}$/);
  await waitText(page, `${row(call)} td.state`, /^answered$/);

  // DTMF: the digits go to the call; no webhook follows.
  await page.fill(`#calls tr[data-actions-for="${call}"] .dtmf-digits`, '42#');
  await page.click(button(call, 'send_dtmf'));
  await waitText(page, result(call), /^send_dtmf: \{"result":"ok"\}$/);

  // Transfer: a new outgoing leg in the same session rings, answers and is
  // bridged to the call; both are listed.
  await page.fill(`#calls tr[data-actions-for="${call}"] .transfer-to`, '+15558880000');
  await page.click(button(call, 'transfer'));
  await waitText(page, result(call), /^transfer: \{"result":"ok"\}$/);
  await waitText(page, `${row(call)} td.state`, /^bridged$/);
  const leg = await page.waitForFunction(
    () =>
      [...document.querySelectorAll('#calls tr.call')].find(
        (tr) => tr.cells[3]?.textContent === '+15558880000' && tr.cells[4]?.textContent === 'bridged',
      )?.dataset.call,
    null,
    { timeout: 10_000 },
  );
  const legId = await leg.jsonValue();
  assert.equal((await cells(page, legId))[1], 'outbound');

  // Hang up: the call and its bridged leg leave the list.
  await page.click(button(call, 'hangup'));
  await page.waitForSelector(row(call), { state: 'detached', timeout: 10_000 });
  await page.waitForSelector(row(legId), { state: 'detached', timeout: 10_000 });
  await page.waitForSelector('#no-calls:not([hidden])', { timeout: 5_000 });
  assert.match(await page.textContent('#events'), /call-hangup/);

  // Dial: the new outbound call appears, then is answered (~1 s later).
  await page.fill('#dial-to', '+15557770000');
  await page.click('#dial button');
  await waitText(page, '#dial-result', /^dial \+15557770000: calling, \S+$/);
  const dialled = (await page.textContent('#dial-result')).split(', ').pop();
  await page.waitForSelector(row(dialled), { timeout: 10_000 });
  const out = await cells(page, dialled);
  assert.deepEqual(out.slice(0, 4), [dialled, 'outbound', '+15550000001', '+15557770000']);
  await waitText(page, `${row(dialled)} td.state`, /^answered$/);

  // A second client of the demo user, in Node: what the page types reaches
  // it as a typing signal, at most one every 2 s however fast one types.
  const other = new CallbridgeClient({
    url: `wss://127.0.0.1:${d.port}/ws`,
    getToken: async () => d.token(),
    WebSocket: d.WebSocket,
  });
  const signals = [];
  const events = [];
  other.on('signal', (s) => signals.push(s));
  other.on('event', (ev) => events.push(ev));
  other.start();
  try {
    await until(() => other.state === 'connected', 15_000, 'the second client');
    const typingFrom = Date.now();
    await page.type('#message-text', 'can you take line 2?', { delay: 15 });
    const typedFor = Date.now() - typingFrom;
    await until(() => signals.length >= 1, 10_000, "the page's typing signal");
    await sleep(500);
    assert.deepEqual(signals[0], { from: DEMO, to: DEMO, name: 'typing', data: { on: true } });
    // 20 keystrokes, one signal per 2 s begun (one, unless the machine is slow).
    const most = 1 + Math.floor(typedFor / 2000);
    assert.ok(signals.length <= most, `${signals.length} typing signals in ${typedFor} ms of typing`);
    assert.ok(signals.every((x) => x.name === 'typing' && x.data.on === true));

    // DTMF on the dialled call, so its line shows a result in the screenshot.
    await page.fill(`#calls tr[data-actions-for="${dialled}"] .dtmf-digits`, '1');
    await page.click(button(dialled, 'send_dtmf'));
    await waitText(page, result(dialled), /^send_dtmf: \{"result":"ok"\}$/);

    // A ringing call for the screenshot, then the second client types.
    await d.simulate('call.initiated', 'v3:page-ringing');
    await page.waitForSelector(row('v3:page-ringing'), { timeout: 10_000 });
    await other.signal({ to: DEMO }, 'typing', { on: true });
    await waitText(page, '#typing', /^demo is typing…$/);
    await page.waitForSelector('#typing.on', { timeout: 5_000 });
    await sleep(500); // its fade-in (0.4 s), for the screenshot
    assert.match(await page.textContent('#signals'), /typing from demo to demo: \{"on":true\}/);

    fs.mkdirSync(artifacts, { recursive: true });
    const shot = path.join(artifacts, 'dev-page-actions.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(fs.statSync(shot).size > 1000, 'screenshot written');

    // "typing" fades about 3 s after the last signal.
    await page.waitForSelector('#typing:not(.on)', { timeout: 6_000 });
    assert.ok(!events.some((e) => e.event === 'signal'), "signals are never 'event's");
  } finally {
    other.stop();
  }

  assert.deepEqual(pageErrors, []);
  await context.close();
});
