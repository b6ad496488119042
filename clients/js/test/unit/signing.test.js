// Signed client messages (contract §9): the worked example of
// docs/protocol.md, and a server that verifies with node:crypto.

import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { afterEach, test } from 'node:test';

import { signEnvelope } from '../../dist/index.js';
import { FakeServer, cleanup, client, jwt, until } from './helpers/fake-server.js';

afterEach(cleanup);

test('the worked example of docs/protocol.md, byte for byte', async () => {
  const signed = '{"type":"send","to":"u2","payload":{"text":"héllo"},"ref":"r1"}';
  const env = await signEnvelope(signed, 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.sig', 'u1', 1764547200123, 'AAECAwQFBgcICQoLDA0ODw==');
  assert.equal(env.signature, 'qQl1Bp7C1ARUZccppW4zZmqU7FBMfkMll8wSx4JU+c8=');
  assert.equal(
    JSON.stringify(env),
    '{"signed":"{\\"type\\":\\"send\\",\\"to\\":\\"u2\\",\\"payload\\":{\\"text\\":\\"héllo\\"},\\"ref\\":\\"r1\\"}","timestamp":1764547200123,"nonce":"AAECAwQFBgcICQoLDA0ODw==","signature":"qQl1Bp7C1ARUZccppW4zZmqU7FBMfkMll8wSx4JU+c8="}',
  );
});

test('a fresh nonce (16 random bytes) and the current time by default', async () => {
  const a = await signEnvelope('{}', 't', 'u');
  const b = await signEnvelope('{}', 't', 'u');
  assert.equal(Buffer.from(a.nonce, 'base64').length, 16);
  assert.notEqual(a.nonce, b.nonce);
  assert.ok(Math.abs(a.timestamp - Date.now()) < 5000);
});

/** The server's check, with node:crypto and the contract's derivation. */
function verify(env, token, userId) {
  const key = createHash('sha256').update(`${token}:${userId}:${Math.floor(env.timestamp / 300000)}`).digest('hex');
  const mac = createHmac('sha256', key).update(`${env.timestamp}.${env.nonce}.${env.signed}`).digest('base64');
  return mac === env.signature;
}

test('with connected.data.signing, messages other than ping and auth are signed with the latest token', async () => {
  const s = await FakeServer.start((conn) => {
    conn.greet({ userId: 'u7', signing: { alg: 'HMAC-SHA256', required: true, windowSecs: 300 }, heartbeatSecs: 0.2 });
    conn.ws.on('message', (d) => {
      const m = JSON.parse(d.toString());
      if (!m.signed) return;
      const inner = JSON.parse(m.signed);
      if (inner.type === 'send') conn.send({ event: 'sent', data: { ref: inner.ref, id: 'msg_1', recipients: [inner.to] } });
    });
  });
  let n = 0;
  // 3 s tokens: an auth refresh comes within the test.
  const c = client(s, { getToken: async () => jwt({ sub: 'u7', lifetimeSecs: 3, n: n++ }), deadMarginMs: 5000 });
  c.start();
  await until(() => c.state === 'connected');
  const conn = s.connections[0];
  const sent = await c.send({ to: 'u2', payload: { text: 'héllo' } });
  assert.equal(sent.id, 'msg_1');
  await c.setStatus('busy');
  const auth = await conn.next('auth', 5000, true);
  await c.setStatus('away');
  await until(() => conn.received.filter((m) => m.signed).length === 3);

  const envs = conn.received.filter((m) => m.signed);
  // Before the refresh: the connection's token; after it: the new one.
  assert.ok(verify(envs[0], conn.token, 'u7'), 'send verifies with the connection token');
  assert.ok(verify(envs[1], conn.token, 'u7'), 'status verifies');
  assert.ok(verify(envs[2], auth.token, 'u7'), 'after the auth refresh: the refreshed token');
  assert.ok(!verify(envs[2], conn.token, 'u7'));
  assert.deepEqual(JSON.parse(envs[1].signed), { type: 'status', status: 'busy' });
  assert.deepEqual(Object.keys(envs[0]), ['signed', 'timestamp', 'nonce', 'signature']);
  assert.equal(new Set(envs.map((e) => e.nonce)).size, 3, 'a nonce per message');
  // ping and auth stay plain.
  assert.ok(conn.received.some((m) => m.type === 'ping'));
  assert.equal(auth.type, 'auth');
});

test('without connected.data.signing nothing is signed', async () => {
  const s = await FakeServer.start((conn) => conn.greet());
  const c = client(s);
  c.start();
  await until(() => c.state === 'connected');
  await c.setStatus('away');
  assert.deepEqual(await s.connections[0].next('status', 2000, true), { type: 'status', status: 'away' });
});
