// Call actions, dial and signals (contract §14) against the real release
// daemon in `serve --dev` with no Telnyx key: its built-in Telnyx stand-in
// answers each action and then posts the webhooks Telnyx would send, so
// the events the client receives are the daemon's own round trip.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { CallbridgeClient, CallbridgeError } from '../../dist/index.js';
import { DEMO, Daemon, sleep, until } from './harness.js';

/** A client of the demo user, recording its events, frames and signals. */
function client(d) {
  const c = new CallbridgeClient({
    url: `wss://127.0.0.1:${d.port}/ws`,
    getToken: async () => d.token(),
    WebSocket: d.WebSocket,
  });
  c.seen = [];
  c.frames = [];
  c.signals = [];
  c.on('event', (ev) => c.seen.push(ev));
  c.on('frame', (f) => c.frames.push(f));
  c.on('signal', (s) => c.signals.push(s));
  return c;
}

const connected = (c) => until(() => c.state === 'connected', 15_000, 'connected');

/** The first event `name` of `call` the client received (as an 'event'). */
const eventOf = (c, name, call) => c.seen.find((e) => e.event === name && e.data.callControlId === call);

/** Index in the frames of the first frame matching `pred`. */
const frameAt = (c, pred) => c.frames.findIndex(pred);

describe('call actions and signals against serve --dev (built-in Telnyx stand-in)', { timeout: 120_000 }, () => {
  let d;
  let c;
  before(async () => {
    d = await Daemon.start();
    c = client(d);
    c.start();
    await connected(c);
  });
  after(async () => {
    c?.stop();
    await d?.stop();
  });

  test('answer and hangup resolve with ok, then the call is answered and leaves activeCalls', async () => {
    const call = 'v3:js-actions';
    await d.simulate('call.initiated', call);
    await until(() => c.activeCalls.some((x) => x.callControlId === call), 10_000, 'the ringing call');
    assert.equal(c.activeCalls[0].state, 'ringing');

    const answered = await c.callAction('answer', call);
    assert.deepEqual(answered, { result: 'ok' });
    await until(() => eventOf(c, 'call-answered', call), 10_000, 'call-answered');
    assert.equal(c.activeCalls.find((x) => x.callControlId === call)?.state, 'answered');
    // The action's answer came first, then the webhook Telnyx sends after it.
    const result = frameAt(c, (f) => f.event === 'call-action-result' && f.data.call === call && f.data.action === 'answer');
    const event = frameAt(c, (f) => f.event === 'call-answered' && f.data.callControlId === call);
    assert.ok(result >= 0 && result < event, `call-action-result (${result}) before call-answered (${event})`);

    const hungUp = await c.callAction('hangup', call);
    assert.deepEqual(hungUp, { result: 'ok' });
    await until(() => eventOf(c, 'call-hangup', call), 10_000, 'call-hangup');
    assert.equal(eventOf(c, 'call-hangup', call).data.hangupCause, 'normal_clearing');
    assert.deepEqual(c.activeCalls, []);
  });

  test('an action on the hung-up call is refused: telnyx-rejected, Telnyx status 422', async () => {
    const call = 'v3:js-actions';
    await assert.rejects(c.callAction('answer', call), (e) => {
      assert.ok(e instanceof CallbridgeError, String(e));
      assert.equal(e.code, 'telnyx-rejected');
      assert.equal(e.telnyx?.status, 422);
      assert.ok(Array.isArray(e.telnyx.errors) && e.telnyx.errors.length > 0, JSON.stringify(e.telnyx));
      return true;
    });
    await assert.rejects(c.callAction('send_dtmf', call, { digits: '1' }), (e) => e.code === 'telnyx-rejected');
    assert.equal(c.state, 'connected', 'the socket keeps working');
  });

  test('send_dtmf resolves with ok and stores no event; speak is started, then ended', async () => {
    const call = 'v3:js-dtmf';
    await d.simulate('call.initiated', call);
    await until(() => eventOf(c, 'call-initiated', call), 10_000, 'call-initiated');
    const before = c.lastSeq;
    assert.deepEqual(await c.callAction('send_dtmf', call, { digits: '12#' }), { result: 'ok' });
    await sleep(600);
    assert.equal(c.lastSeq, before, 'send_dtmf has no webhook');
    // A missing required field is Telnyx's 422 too.
    await assert.rejects(c.callAction('send_dtmf', call, { digits: '' }), (e) => e.code === 'telnyx-rejected' && e.telnyx?.status === 422);

    assert.deepEqual(await c.callAction('speak', call, { payload: 'Hello', voice: 'female' }), { result: 'ok' });
    await until(() => eventOf(c, 'call-speak-ended', call), 10_000, 'call-speak-ended');
    const names = c.seen.filter((e) => e.data.callControlId === call).map((e) => e.event);
    assert.deepEqual(names, ['call-initiated', 'call-speak-started', 'call-speak-ended']);
    await c.callAction('hangup', call);
    await until(() => !c.activeCalls.some((x) => x.callControlId === call), 10_000, 'the call to leave');
  });

  test('dial resolves with the new call, whose call-initiated (outbound) and call-answered follow', async () => {
    const dialled = await c.dial('+15557770000');
    assert.equal(typeof dialled.call_control_id, 'string');
    assert.ok(dialled.call_control_id.length > 0);
    assert.equal(typeof dialled.call_session_id, 'string');
    const id = dialled.call_control_id;
    await until(() => eventOf(c, 'call-initiated', id), 10_000, "the dialled call's call-initiated");
    const initiated = eventOf(c, 'call-initiated', id).data;
    assert.equal(initiated.direction, 'outbound');
    assert.equal(initiated.to, '+15557770000');
    assert.equal(initiated.from, '+15550000001', "the demo user's number as caller id");
    await until(() => eventOf(c, 'call-answered', id), 10_000, "the dialled call's call-answered");
    const active = c.activeCalls.find((x) => x.callControlId === id);
    assert.equal(active?.state, 'answered');
    assert.equal(active?.direction, 'outbound');

    await c.callAction('hangup', id);
    await until(() => eventOf(c, 'call-hangup', id), 10_000, "the dialled call's call-hangup");
    assert.deepEqual(c.activeCalls, []);
  });

  test("a signal reaches the user's other connection as 'signal', never as 'event'", async () => {
    const b = client(d);
    b.start();
    await connected(b);
    try {
      const seenBefore = b.seen.length;
      const lastSeqBefore = b.lastSeq;
      await c.signal({ to: DEMO }, 'typing', { on: true });
      await until(() => b.signals.length === 1, 10_000, 'the signal');
      assert.deepEqual(b.signals[0], { from: DEMO, to: DEMO, name: 'typing', data: { on: true } });
      const frame = b.frames.find((f) => f.event === 'signal');
      assert.equal(frame.seq, undefined, 'not stored: no seq');

      // To everyone on a call: the demo user is bound to it.
      const call = 'v3:js-signal';
      await d.simulate('call.initiated', call);
      await until(() => eventOf(b, 'call-initiated', call), 10_000, 'the call on b');
      const lastSeq = b.lastSeq;
      await b.signal({ call }, 'typing', { on: false });
      await until(() => c.signals.length === 1, 10_000, 'the call signal on c');
      assert.deepEqual(c.signals[0], { from: DEMO, call, name: 'typing', data: { on: false } });

      await sleep(500);
      assert.equal(c.signals.length, 1, "the sender's own connection does not get it back");
      assert.equal(b.signals.length, 1);
      for (const x of [b, c]) {
        assert.ok(!x.seen.some((e) => e.event === 'signal'), "no 'event' for a signal");
      }
      assert.equal(b.seen.length, seenBefore + 1, 'only the call-initiated was an event');
      assert.equal(b.lastSeq, lastSeq);
      assert.equal(lastSeq, lastSeqBefore + 1);

      // A refusal arrives as an 'error' event.
      const errors = [];
      c.on('error', (e) => errors.push(e));
      await c.signal({ to: 'nobody-here' }, 'typing', { on: true });
      await until(() => errors.length === 1, 10_000, 'the refusal');
      assert.equal(errors[0].code, 'unknown-recipient');
      await c.callAction('hangup', call);
    } finally {
      b.stop();
    }
  });
});
