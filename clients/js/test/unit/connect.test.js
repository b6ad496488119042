// Connecting: state changes, where the token goes, the greeting, stop().

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import WebSocket from 'ws';

import { CallbridgeClient } from '../../dist/index.js';
import { FakeServer, cleanup, client, sleep, until } from './helpers/fake-server.js';

afterEach(cleanup);

test('states go idle → connecting → connected; stop() → stopped, nothing after', async () => {
  const s = await FakeServer.start((c) => c.greet());
  const c = client(s);
  const connectedData = [];
  c.on('connected', (d) => connectedData.push(d));
  assert.equal(c.state, 'idle');
  c.start();
  await until(() => c.state === 'connected', 5000, 'connected');
  assert.deepEqual(c.states, [
    { from: 'idle', to: 'connecting' },
    { from: 'connecting', to: 'connected' },
  ]);
  assert.equal(connectedData[0].userId, 'u1');
  c.stop();
  assert.equal(c.state, 'stopped');
  assert.deepEqual(c.states.at(-1), { from: 'connected', to: 'stopped', reason: 'stop() called' });
  await sleep(150);
  assert.equal(s.connections.length, 1, 'no reconnect after stop()');
  // start() again continues from stopped.
  c.start();
  await until(() => c.state === 'connected', 5000, 'connected again');
  assert.deepEqual(c.states.at(-2), { from: 'stopped', to: 'connecting' });
  c.stop();
  await s.close();
});

test('the token goes in the subprotocol by default (callbridge.v1, bearer.<JWT>)', async () => {
  const s = await FakeServer.start((c) => c.greet());
  const c = client(s);
  c.start();
  const conn = await s.connection(0);
  await until(() => c.state === 'connected');
  assert.deepEqual(conn.protocols, ['callbridge.v1', `bearer.${c.tokens[0]}`]);
  assert.equal(conn.url.searchParams.get('token'), null);
  assert.equal(conn.ws.protocol, 'callbridge.v1');
  c.stop();
  await s.close();
});

test("tokenIn: 'query' puts it in ?token=", async () => {
  const s = await FakeServer.start((c) => c.greet());
  const c = client(s, { tokenIn: 'query' });
  c.start();
  const conn = await s.connection(0);
  await until(() => c.state === 'connected');
  assert.equal(conn.url.searchParams.get('token'), c.tokens[0]);
  assert.deepEqual(conn.protocols, ['callbridge.v1']);
  c.stop();
  await s.close();
});

test("tokenIn: 'message' sends an auth message first", async () => {
  const s = await FakeServer.start(async (conn) => {
    conn.send({ event: 'auth-required', data: { timeoutSecs: 10 } });
    const auth = await conn.next('auth', 5000, true);
    conn.authToken = auth.token;
    conn.greet();
  });
  const c = client(s, { tokenIn: 'message' });
  c.start();
  const conn = await s.connection(0);
  await until(() => c.state === 'connected');
  assert.equal(conn.token, undefined, 'no token in the upgrade');
  assert.equal(conn.authToken, c.tokens[0]);
  assert.deepEqual(conn.received[0], { type: 'auth', token: c.tokens[0] });
  assert.equal(conn.received.filter((m) => m.type === 'auth').length, 1, 'auth sent once');
  c.stop();
  await s.close();
});

test('snapshot and other server messages are emitted; custom broadcasts under their own name', async () => {
  const calls = [{ callControlId: 'cc1', direction: 'inbound', from: '+1555', to: '+1666', state: 'ringing', startedAt: '2025-01-01T00:00:00Z' }];
  const s = await FakeServer.start((conn) => {
    conn.greet({ status: 'away', activeCalls: calls });
    conn.send({ event: 'status-changed', data: { status: 'busy' } });
    conn.send({ event: 'shift-change', data: { team: 'b' } });
    conn.send({ event: 'state', data: { nope: true } });
  });
  const c = client(s);
  const got = {};
  c.on('snapshot', (d) => (got.snapshot = d));
  c.on('status-changed', (d) => (got.status = d.status));
  c.on('shift-change', (d, frame) => (got.custom = [d, frame.event]));
  c.start();
  await until(() => got.custom, 5000, 'the custom event');
  assert.deepEqual(got.snapshot, { status: 'away', activeCalls: calls });
  assert.deepEqual(c.activeCalls, calls);
  assert.equal(got.status, 'busy');
  assert.deepEqual(got.custom, [{ team: 'b' }, 'shift-change']);
  assert.ok(c.states.every((st) => typeof st.to === 'string'), "a server frame named 'state' is not emitted as one");
  assert.equal(c.seen.length, 0, 'nothing stored was handed to event');
  c.stop();
  await s.close();
});

test('on() returns an unsubscribe function; off() works; a throwing listener does not break the client', async () => {
  const s = await FakeServer.start((c) => c.greet());
  const c = client(s);
  const a = [];
  const b = [];
  const fa = (x) => a.push(x.to);
  const unsub = c.on('state', fa);
  const fb = (x) => b.push(x.to);
  c.on('state', fb);
  c.off('state', fb);
  unsub();
  // The test runner's own handler would count the rethrown error as this
  // test's failure: stand in for it while the listener throws.
  const runner = process.listeners('uncaughtException');
  process.removeAllListeners('uncaughtException');
  const errors = [];
  process.on('uncaughtException', (e) => errors.push(e));
  const after = [];
  c.on('connected', () => {
    throw new Error('listener bug');
  });
  c.on('connected', () => after.push('next listener ran'));
  try {
    c.start();
    await until(() => c.state === 'connected');
    await sleep(20);
  } finally {
    process.removeAllListeners('uncaughtException');
    for (const l of runner) process.on('uncaughtException', l);
  }
  assert.deepEqual(after, ['next listener ran']);
  assert.deepEqual(a, []);
  assert.deepEqual(b, []);
  assert.equal(errors[0]?.message, 'listener bug', 'the exception surfaces as uncaught');
  c.stop();
  await s.close();
});

test('without a WebSocket implementation the constructor says what to pass', () => {
  assert.equal(typeof globalThis.WebSocket, 'undefined', 'Node 20 has no global WebSocket');
  assert.throws(() => new CallbridgeClient({ url: 'ws://x', getToken: () => 't' }), /ws package/);
  assert.ok(new CallbridgeClient({ url: 'ws://x', getToken: () => 't', WebSocket }));
});

test('a connection that never gets `connected` is dropped after connectTimeoutMs and retried', async () => {
  const s = await FakeServer.start((conn, i) => {
    if (i > 0) conn.greet();
  });
  const c = client(s, { connectTimeoutMs: 200 });
  c.start();
  await until(() => c.state === 'connected', 5000, 'connected on the second try');
  assert.equal(s.connections.length, 2);
  assert.equal(c.states[1].to, 'reconnecting');
  assert.equal(c.states[1].reason, 'connect timeout');
  c.stop();
  await s.close();
});

test('a token that cannot be a subprotocol name (not a JWT) goes in an auth message', async () => {
  const s = await FakeServer.start(async (conn) => {
    await conn.next('auth', 5000, true);
    conn.greet();
  });
  const c = client(s, { getToken: () => 'opaque/token==' });
  c.start();
  await until(() => c.state === 'connected');
  assert.deepEqual(s.connections[0].protocols, ['callbridge.v1']);
  assert.deepEqual(s.connections[0].received[0], { type: 'auth', token: 'opaque/token==' });
});
