// Call actions, dial and signals (contract §14): callAction() and dial()
// resolve with call-action-result's data.result or reject with the server's
// code (Telnyx's details on telnyx-rejected), time out, fail on a lost
// connection; signals go out without a ref and come in as 'signal', never
// as stored events.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { CallbridgeError } from '../../dist/index.js';
import { FakeServer, cleanup, client, ev, sleep, until } from './helpers/fake-server.js';

afterEach(cleanup);

const TELNYX_422 = {
  status: 422,
  errors: [{ code: '90018', title: 'Call has already ended', detail: 'This call is no longer active and can\'t receive commands.' }],
};

/**
 * A server that answers call actions like callbridge: by the call id (or
 * dial's `to`) a test picks the outcome.
 */
function answering(conn) {
  conn.greet();
  conn.ws.on('message', (d) => {
    const m = JSON.parse(d.toString());
    if (m.type !== 'call-action') return;
    const key = m.action === 'dial' ? m.params.to : m.call;
    const fail = (code, extra = {}) => conn.send({ event: 'error', data: { code, message: `refused: ${code}`, ref: m.ref, ...extra } });
    if (key === 'silent') return;
    if (key === 'telnyx-rejected') return fail(key, { telnyx: TELNYX_422 });
    if (key?.startsWith('err:')) return fail(key.slice(4));
    const result =
      m.action === 'dial'
        ? { call_control_id: 'v3:new', call_leg_id: 'leg-1', call_session_id: 'sess-1', is_alive: false, record_type: 'call' }
        : { result: 'ok' };
    const delay = key === 'slow' ? 150 : 0;
    setTimeout(() => conn.send({ event: 'call-action-result', data: { ref: m.ref, action: m.action, call: m.call ?? result.call_control_id, result } }), delay);
  });
}

async function started(opts = {}, onConn = answering) {
  const s = await FakeServer.start(onConn);
  const c = client(s, opts);
  c.start();
  await until(() => c.state === 'connected');
  return { s, c, conn: s.connections[0] };
}

test('callAction() sends §14 call-action with its own ref and resolves with data.result', async () => {
  const { c, conn } = await started();
  const r = await c.callAction('send_dtmf', 'v3:cc1', { digits: '12#', duration_millis: 250 });
  assert.deepEqual(r, { result: 'ok' });
  const m = conn.received.find((x) => x.type === 'call-action');
  assert.deepEqual(Object.keys(m), ['type', 'action', 'call', 'params', 'ref']);
  assert.deepEqual(m, { type: 'call-action', action: 'send_dtmf', call: 'v3:cc1', params: { digits: '12#', duration_millis: 250 }, ref: m.ref });
  assert.equal(typeof m.ref, 'string');
  await c.callAction('hangup', 'v3:cc1');
  const [, m2] = conn.received.filter((x) => x.type === 'call-action');
  assert.deepEqual(m2.params, {}, 'no params: an empty object');
  assert.notEqual(m2.ref, m.ref, 'a new ref per action');
  c.send({ to: 'u2', payload: 1 }).catch(() => {});
  const sent = await conn.next('send', 2000, true);
  assert.ok(![m.ref, m2.ref].includes(sent.ref), 'one ref sequence with send(): never reused');
});

test('dial() sends a call-action dial with params {to, ...params} and no call; resolves with the new call', async () => {
  const { c, conn } = await started();
  const call = await c.dial('+15550001111', { from: '+15559990000', timeout_secs: 30 });
  assert.deepEqual(call, { call_control_id: 'v3:new', call_leg_id: 'leg-1', call_session_id: 'sess-1', is_alive: false, record_type: 'call' });
  const m = conn.received.find((x) => x.type === 'call-action');
  assert.deepEqual(Object.keys(m), ['type', 'action', 'params', 'ref']);
  assert.deepEqual(m.params, { to: '+15550001111', from: '+15559990000', timeout_secs: 30 });
  assert.equal(m.action, 'dial');
  await c.dial('sip:bob@example.com');
  assert.deepEqual(conn.received.filter((x) => x.type === 'call-action')[1].params, { to: 'sip:bob@example.com' });
});

test("each server error code rejects with that code; answered errors are not 'error' events", async () => {
  const { c } = await started();
  const errors = [];
  c.on('error', (e) => errors.push(e));
  const codes = ['actions-disabled', 'action-not-allowed', 'not-on-call', 'bad-request', 'telnyx-unavailable', 'store-unavailable'];
  for (const code of codes) {
    await assert.rejects(c.callAction('answer', `err:${code}`), (e) => {
      assert.ok(e instanceof CallbridgeError);
      assert.equal(e.code, code);
      assert.equal(e.message, `refused: ${code}`);
      assert.equal(e.telnyx, undefined);
      return true;
    });
  }
  await assert.rejects(c.dial('err:dial-not-configured'), { code: 'dial-not-configured' });
  assert.deepEqual(errors, []);
});

test("telnyx-rejected carries Telnyx's status and errors as err.telnyx", async () => {
  const { c } = await started();
  await assert.rejects(c.callAction('transfer', 'telnyx-rejected', { to: '+15550002222' }), (e) => {
    assert.ok(e instanceof CallbridgeError);
    assert.equal(e.code, 'telnyx-rejected');
    assert.deepEqual(e.telnyx, TELNYX_422);
    return true;
  });
  await assert.rejects(c.dial('telnyx-rejected'), (e) => e.code === 'telnyx-rejected' && e.telnyx.status === 422);
});

test("no answer rejects with 'timeout' after actionTimeoutMs, not sendTimeoutMs", async () => {
  const { c } = await started({ sendTimeoutMs: 50, actionTimeoutMs: 400 });
  // 150 ms: past sendTimeoutMs, within actionTimeoutMs.
  assert.deepEqual(await c.callAction('answer', 'slow'), { result: 'ok' });
  const t0 = Date.now();
  await assert.rejects(c.callAction('answer', 'silent'), { code: 'timeout', message: 'no answer within 400 ms' });
  assert.ok(Date.now() - t0 >= 350);
  assert.equal(c.state, 'connected');
  // A late result (after the timeout) is dropped quietly.
});

test("a connection lost mid-action rejects with 'connection-lost'; the client reconnects", async () => {
  const { s, c, conn } = await started();
  const p = c.callAction('hangup', 'silent');
  await conn.next('call-action', 2000, true);
  conn.cut();
  await assert.rejects(p, { code: 'connection-lost' });
  await s.connection(1);
  await until(() => c.state === 'connected');
  assert.deepEqual(await c.callAction('hangup', 'v3:cc1'), { result: 'ok' });
});

test("an action while reconnecting goes out once connected; when stopped it is 'not-connected'", async () => {
  const s = await FakeServer.start((conn, i) => {
    if (i === 0) return conn.cut();
    setTimeout(() => answering(conn), 50);
  });
  const c = client(s);
  await assert.rejects(c.dial('+15550001111'), { code: 'not-connected' });
  c.start();
  await until(() => c.state === 'reconnecting');
  assert.deepEqual(await c.callAction('answer', 'v3:cc1'), { result: 'ok' });
  const pending = c.callAction('answer', 'silent');
  c.stop();
  await assert.rejects(pending, { code: 'not-connected' });
  await assert.rejects(c.callAction('answer', 'v3:cc1'), { code: 'not-connected' });
});

test('signal() sends §14 signal to a user or a call, no ref; resolves once written; a refusal is an error event', async () => {
  const { c, conn } = await started();
  const errors = [];
  c.on('error', (e) => errors.push(e));
  assert.equal(await c.signal({ to: 'u2' }, 'typing', { on: true }), undefined);
  await c.signal({ call: 'v3:cc1' }, 'typing', { on: false });
  await c.signal({ to: 'u2' }, 'ping');
  await sleep(20);
  const sig = conn.received.filter((m) => m.type === 'signal');
  assert.deepEqual(sig, [
    { type: 'signal', to: 'u2', name: 'typing', data: { on: true } },
    { type: 'signal', call: 'v3:cc1', name: 'typing', data: { on: false } },
    { type: 'signal', to: 'u2', name: 'ping', data: {} },
  ]);
  assert.deepEqual(Object.keys(sig[0]), ['type', 'to', 'name', 'data']);
  conn.send({ event: 'error', data: { code: 'unknown-recipient', message: 'no such user' } });
  await until(() => errors.length === 1);
  assert.equal(errors[0].code, 'unknown-recipient');
  c.stop();
  await assert.rejects(c.signal({ to: 'u2' }, 'typing', {}), { code: 'not-connected' });
});

test("incoming signals are 'signal' events: not 'event', no seq, not counted, not held behind a hole", async () => {
  const { c, conn } = await started({ holeTimeoutMs: 5000 }, (x) => x.greet({ lastSeq: 1 }));
  const signals = [];
  const frames = [];
  c.on('signal', (d) => signals.push(d));
  c.on('typing', (d) => frames.push(d));
  const typing = { from: 'u2', to: 'u1', name: 'typing', data: { on: true } };
  conn.send({ event: 'signal', data: typing });
  await until(() => signals.length === 1);
  assert.deepEqual(signals[0], typing);
  assert.equal(c.lastSeq, 1);
  assert.deepEqual(c.seen, []);
  // Event 3 waits for 2; a signal meanwhile is handed out at once.
  conn.send(ev(3));
  conn.send({ event: 'signal', data: { from: 'u3', call: 'v3:cc1', name: 'typing', data: null } });
  await until(() => signals.length === 2);
  assert.deepEqual(signals[1], { from: 'u3', call: 'v3:cc1', name: 'typing', data: null });
  assert.deepEqual(c.seen, []);
  conn.send(ev(2));
  await until(() => c.lastSeq === 3);
  assert.deepEqual(c.seen.map((e) => e.seq), [2, 3]);
  assert.equal(signals.length, 2);
  assert.deepEqual(frames, [], 'not emitted under its name');
});

test('with connected.data.signing, call actions and signals are signed (§9)', async () => {
  const { c, conn } = await started({}, (x) => x.greet({ signing: { alg: 'HMAC-SHA256', required: true, windowSecs: 300 } }));
  c.callAction('reject', 'v3:cc1', { cause: 'USER_BUSY' }).catch(() => {});
  await c.signal({ to: 'u2' }, 'typing', {});
  await until(() => conn.received.filter((m) => m.signed).length === 2);
  const inner = conn.received.filter((m) => m.signed).map((m) => JSON.parse(m.signed));
  assert.deepEqual(
    inner.map((m) => [m.type, m.action ?? m.name]),
    [
      ['call-action', 'reject'],
      ['signal', 'typing'],
    ],
  );
  assert.deepEqual(inner[0].params, { cause: 'USER_BUSY' });
});
