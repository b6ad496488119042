// Tokens: refreshed at ~80% of their lifetime as an `auth` message on the
// open connection, one getToken call at a time, failures retried, no token
// at all → stopped.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { FakeServer, cleanup, client, jwt, until } from './helpers/fake-server.js';

afterEach(cleanup);

const claims = (t) => JSON.parse(Buffer.from(t.split('.')[1], 'base64url'));

test('a 3 s token is refreshed before it expires, as an auth message on the open connection', async () => {
  const s = await FakeServer.start((conn) => conn.greet());
  const issued = [];
  const c = client(s, {
    getToken: async () => {
      const t = jwt({ lifetimeSecs: 3, n: issued.length });
      issued.push({ t, at: Date.now() });
      return t;
    },
  });
  c.start();
  const conn = await s.connection(0);
  const first = await conn.next('auth', 5000);
  const at = Date.now();
  assert.equal(first.token, issued[1].t, 'the new token');
  assert.ok(at < claims(issued[0].t).exp * 1000, 'before the old one expired');
  const { iat } = claims(issued[0].t);
  assert.ok(at >= (iat + 2.4) * 1000 - 50, `at about 80% of the lifetime, not before (${at - iat * 1000} ms after iat)`);
  const second = await conn.next('auth', 5000);
  assert.equal(second.token, issued[2].t);
  assert.equal(s.connections.length, 1, 'no reconnect needed');
  assert.equal(c.state, 'connected');
});

test('concurrent needs for a token share one getToken call', async () => {
  let release;
  let calls = 0;
  const s = await FakeServer.start((conn) => conn.greet());
  const c = client(s, {
    getToken: () => {
      calls++;
      if (calls === 1) return jwt({ lifetimeSecs: 1, n: 1 });
      // The refresh (at 0.8 s) waits; meanwhile the server expires the
      // connection, so the reconnect needs a token too.
      s.connections[0].close(4001, 'token expired');
      return new Promise((r) => (release = () => r(jwt({ lifetimeSecs: 3600, n: 2 }))));
    },
  });
  c.start();
  await until(() => c.states.some((x) => x.closeCode === 4001), 5000, 'the 4001');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(calls, 2, 'the reconnect waits for the refresh already under way');
  release();
  await until(() => c.state === 'connected' && s.connections.length === 2);
  assert.equal(calls, 2);
  assert.equal(claims(s.connections[1].token).n, 2, 'the shared new token connects');
});

test('getToken throwing is retried with backoff', async () => {
  let calls = 0;
  const s = await FakeServer.start((conn) => conn.greet());
  const c = client(s, {
    getToken: async () => {
      if (++calls < 3) throw new Error('auth backend down');
      return jwt();
    },
  });
  c.start();
  await until(() => c.state === 'connected');
  assert.equal(calls, 3);
  const retries = c.states.filter((x) => x.to === 'reconnecting');
  assert.equal(retries.length, 2);
  assert.match(retries[0].reason, /getToken failed: auth backend down/);
  assert.ok(retries.every((x) => x.retryInMs > 0));
});

test('getToken returning no token stops the client for good', async () => {
  const s = await FakeServer.start((conn) => conn.greet());
  const c = client(s, { getToken: async () => null });
  const stopped = [];
  c.on('stopped', (x) => stopped.push(x));
  c.start();
  await until(() => c.state === 'stopped');
  assert.deepEqual(stopped, [{ closeCode: undefined, reason: 'getToken returned no token' }]);
  assert.equal(s.connections.length, 0);
});

test('a good token is reused for a reconnect; one past its refresh point is not', async () => {
  let now = Date.now();
  const s = await FakeServer.start((conn, i) => {
    conn.greet();
    if (i < 2) setTimeout(() => conn.cut(), 20);
  });
  const c = client(s, { now: () => now, getToken: async () => jwt({ lifetimeSecs: 100, iat: Math.floor(now / 1000), n: Math.random() }) });
  let n = 0;
  c.on('state', (x) => {
    // After the first cut, jump past 80% of the lifetime (and ticks see it).
    if (x.to === 'reconnecting' && ++n === 2) now += 90_000;
  });
  c.start();
  await until(() => s.connections.length === 3 && c.state === 'connected');
  assert.equal(s.connections[1].token, s.connections[0].token, 'reused');
  assert.notEqual(s.connections[2].token, s.connections[1].token, 'renewed');
});
