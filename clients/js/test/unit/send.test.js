// send() and setStatus() (contract §8, §11): resolves with `sent`, rejects
// with the server's error code, `timeout`, `not-connected`; ordering and
// sends made while reconnecting.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { CallbridgeError } from '../../dist/index.js';
import { FakeServer, cleanup, client, sleep, until } from './helpers/fake-server.js';

afterEach(cleanup);

/** A server that answers `send` like callbridge: `sent`, or `error` with the ref. */
function answering(conn) {
  conn.greet();
  conn.ws.on('message', (d) => {
    const m = JSON.parse(d.toString());
    if (m.type !== 'send') return;
    if (m.to === 'nobody') {
      conn.send({ event: 'error', data: { code: 'unknown-recipient', message: 'no such user', ref: m.ref } });
    } else if (m.to !== 'silent') {
      conn.send({ event: 'sent', data: { ref: m.ref, id: `msg_${m.ref}`, recipients: m.to ? [m.to] : ['u3'] } });
    }
  });
}

test('send() resolves with the sent data; the message goes out as §8 says', async () => {
  const s = await FakeServer.start(answering);
  const c = client(s);
  c.start();
  await until(() => c.state === 'connected');
  const sent = await c.send({ to: 'u2', payload: { text: 'héllo' } });
  const msg = s.connections[0].received.find((m) => m.type === 'send');
  assert.deepEqual(Object.keys(msg), ['type', 'to', 'payload', 'ref']);
  assert.deepEqual(msg.payload, { text: 'héllo' });
  assert.equal(typeof msg.ref, 'string');
  assert.deepEqual(sent, { ref: msg.ref, id: `msg_${msg.ref}`, recipients: ['u2'] });
  const toCall = await c.send({ call: 'v3:abc', payload: 'hi' });
  assert.deepEqual(toCall.recipients, ['u3']);
  const m2 = s.connections[0].received.filter((m) => m.type === 'send')[1];
  assert.deepEqual(m2, { type: 'send', call: 'v3:abc', payload: 'hi', ref: m2.ref });
  assert.notEqual(m2.ref, msg.ref, 'a new ref per send');
});

test("send() rejects with an Error whose code is the server's", async () => {
  const s = await FakeServer.start(answering);
  const c = client(s);
  const errors = [];
  c.on('error', (e) => errors.push(e));
  c.start();
  await until(() => c.state === 'connected');
  await assert.rejects(c.send({ to: 'nobody', payload: 1 }), (e) => {
    assert.ok(e instanceof CallbridgeError);
    assert.ok(e instanceof Error);
    assert.equal(e.code, 'unknown-recipient');
    assert.equal(e.message, 'no such user');
    return true;
  });
  assert.deepEqual(errors, [], "an answered error is not also an 'error' event");
  // An error that answers no send is an 'error' event.
  s.connections[0].send({ event: 'error', data: { code: 'bad-request', message: 'not JSON' } });
  await until(() => errors.length === 1);
  assert.equal(errors[0].code, 'bad-request');
});

test("send() without an answer rejects with code 'timeout'", async () => {
  const s = await FakeServer.start(answering);
  const c = client(s, { sendTimeoutMs: 150 });
  c.start();
  await until(() => c.state === 'connected');
  await assert.rejects(c.send({ to: 'silent', payload: 1 }), { code: 'timeout' });
  assert.equal(c.state, 'connected');
});

test("send() and setStatus() when not started or stopped reject with 'not-connected'", async () => {
  const s = await FakeServer.start(answering);
  const c = client(s);
  await assert.rejects(c.send({ to: 'u2', payload: 1 }), { code: 'not-connected' });
  await assert.rejects(c.setStatus('away'), { code: 'not-connected' });
  c.start();
  await until(() => c.state === 'connected');
  const pending = c.send({ to: 'silent', payload: 1 });
  c.stop();
  await assert.rejects(pending, { code: 'not-connected' });
  await assert.rejects(c.send({ to: 'u2', payload: 1 }), { code: 'not-connected' });
});

test("a send whose connection drops before the answer rejects with 'connection-lost'", async () => {
  const s = await FakeServer.start(answering);
  const c = client(s);
  c.start();
  await until(() => c.state === 'connected');
  const p = c.send({ to: 'silent', payload: 1 });
  await s.connections[0].next('send', 2000, true);
  s.connections[0].cut();
  await assert.rejects(p, { code: 'connection-lost' });
});

test('a send made while reconnecting goes out once connected', async () => {
  const s = await FakeServer.start((conn, i) => {
    if (i === 0) return conn.cut();
    setTimeout(() => answering(conn), 50);
  });
  const c = client(s);
  c.start();
  await until(() => c.state === 'reconnecting');
  const sent = await c.send({ to: 'u2', payload: 'later' });
  assert.deepEqual(sent.recipients, ['u2']);
  assert.equal(s.connections.length, 2);
});

test('setStatus() sends a status message and resolves once sent; order is kept', async () => {
  const s = await FakeServer.start(answering);
  const c = client(s);
  c.start();
  await until(() => c.state === 'connected');
  const r = await c.setStatus('away');
  assert.equal(r, undefined);
  const p = c.send({ to: 'u2', payload: 1 });
  await c.setStatus('busy');
  await p;
  await sleep(20);
  const types = s.connections[0].received.filter((m) => m.type !== 'ping');
  assert.deepEqual(
    types.map((m) => m.status ?? m.type),
    ['away', 'send', 'busy'],
  );
  assert.deepEqual(types[0], { type: 'status', status: 'away' });
});
