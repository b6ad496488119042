// The close-code table: after each code, the client's next action.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { CLOSE_CODE_ACTIONS, closeAction } from '../../dist/index.js';
import { FAST, FakeServer, cleanup, client, sleep, until } from './helpers/fake-server.js';

afterEach(cleanup);

/**
 * Greets every connection, closes the first `closes` of them with `code`
 * right after `connected` (or before it when `early`), and returns the
 * client's state changes and the connections.
 */
async function afterClose(code, { closes = 1, early = false, opts = {}, wait = 'connected' } = {}) {
  const s = await FakeServer.start((conn, i) => {
    if (i < closes) {
      if (!early) conn.greet();
      setTimeout(() => conn.close(code, `reason ${code}`), 10);
    } else {
      conn.greet();
    }
  });
  const c = client(s, opts);
  c.start();
  if (wait === 'connected') {
    await until(() => c.state === 'connected' && s.connections.length === closes + 1, 5000, 'connected again');
  } else {
    await until(() => c.state === wait, 5000, wait);
  }
  return { s, c, retry: c.states.find((st) => st.to === 'reconnecting') };
}

test('the table is the one of the README', () => {
  assert.deepEqual(
    { ...CLOSE_CODE_ACTIONS },
    {
      1001: 'restart-jitter',
      1008: 'new-token-once',
      1013: 'backoff-floor',
      4001: 'new-token',
      4003: 'stop',
      4008: 'backoff-floor',
      4013: 'reconnect-now',
      4029: 'backoff-floor',
      4401: 'new-token',
    },
  );
  assert.equal(closeAction(1006), 'backoff');
  assert.equal(closeAction(undefined), 'backoff');
  assert.ok(Object.isFrozen(CLOSE_CODE_ACTIONS));
});

test('4003: stop for good, with a stopped event', async () => {
  const s = await FakeServer.start((conn) => {
    conn.greet();
    setTimeout(() => conn.close(4003, 'tokens revoked'), 10);
  });
  const c = client(s);
  const stopped = [];
  c.on('stopped', (x) => stopped.push(x));
  c.start();
  await until(() => c.state === 'stopped');
  assert.deepEqual(stopped, [{ closeCode: 4003, reason: 'tokens revoked' }]);
  assert.deepEqual(c.states.at(-1), { from: 'connected', to: 'stopped', closeCode: 4003, reason: 'tokens revoked' });
  await sleep(200);
  assert.equal(s.connections.length, 1, 'never tried again');
  assert.equal(c.states.filter((x) => x.to === 'connecting').length, 1);
  await s.close();
});

for (const code of [4001, 4401]) {
  test(`${code}: a new token, reconnect at once`, async () => {
    const { s, c, retry } = await afterClose(code, { early: code === 4401 });
    assert.equal(retry.closeCode, code);
    assert.equal(retry.retryInMs, 0);
    assert.equal(c.tokens.length, 2, 'getToken called again');
    assert.equal(s.connections[1].token, c.tokens[1], 'the new token is used');
    c.stop();
    await s.close();
  });
}

test('1008: a new token once, reconnect at once; refused again → stopped', async () => {
  const { s, c, retry } = await afterClose(1008, { closes: 2, early: true, wait: 'stopped' });
  assert.equal(retry.closeCode, 1008);
  assert.equal(retry.retryInMs, 0);
  assert.equal(c.tokens.length, 2, 'one new token, not more');
  assert.equal(s.connections[1].token, c.tokens[1]);
  assert.equal(s.connections.length, 2);
  assert.deepEqual(c.states.at(-1), { from: 'reconnecting', to: 'stopped', closeCode: 1008, reason: 'reason 1008' });
  await sleep(100);
  assert.equal(s.connections.length, 2, 'stopped for good');
  await s.close();
});

test('1008 once, then connected: a later 1008 gets its own new token', async () => {
  const s = await FakeServer.start((conn, i) => {
    if (i === 0) return setTimeout(() => conn.close(1008, 'token expired'), 10);
    conn.greet();
    if (i === 1) setTimeout(() => conn.close(1008, 'refresh refused'), 10);
  });
  const c = client(s);
  c.start();
  await until(() => s.connections.length === 3 && c.state === 'connected');
  assert.equal(c.tokens.length, 3);
  c.stop();
  await s.close();
});

test('4013: reconnect at once with since, same token', async () => {
  const { s, c, retry } = await afterClose(4013);
  assert.equal(retry.retryInMs, 0);
  assert.equal(retry.closeCode, 4013);
  assert.equal(c.tokens.length, 1, 'the token is still good');
  assert.equal(s.connections[1].since, 0);
  c.stop();
  await s.close();
});

test('"at once" twice in a row without a stable connection backs off instead', async () => {
  const { s, c } = await afterClose(4013, { closes: 2 });
  const retries = c.states.filter((x) => x.to === 'reconnecting');
  assert.equal(retries[0].retryInMs, 0);
  assert.ok(retries[1].retryInMs > 0, `second retry waits (${retries[1].retryInMs} ms)`);
  c.stop();
  await s.close();
});

for (const code of [4008, 4029, 1013]) {
  test(`${code}: back off with a higher floor`, async () => {
    const { s, c, retry } = await afterClose(code, { opts: { random: () => 0 } });
    assert.equal(retry.closeCode, code);
    assert.ok(retry.retryInMs >= FAST.floorMs, `${retry.retryInMs} ≥ ${FAST.floorMs}`);
    assert.equal(c.tokens.length, 1);
    c.stop();
    await s.close();
  });
}

test('1001: reconnect after a random 0 – restartMaxMs', async () => {
  const { s, c, retry } = await afterClose(1001, { opts: { random: () => 0.75 } });
  assert.equal(retry.closeCode, 1001);
  assert.equal(retry.retryInMs, 0.75 * FAST.restartMaxMs);
  c.stop();
  await s.close();
});

for (const code of [1000, 1006, 1009, 4999]) {
  test(`${code}: full-jitter backoff`, async () => {
    const s = await FakeServer.start((conn, i) => {
      conn.greet();
      if (i === 0) setTimeout(() => (code === 1006 ? conn.cut() : conn.close(code)), 10);
    });
    const c = client(s, { random: () => 0.99 });
    c.start();
    await until(() => s.connections.length === 2 && c.state === 'connected');
    const retry = c.states.find((x) => x.to === 'reconnecting');
    assert.equal(retry.closeCode, code);
    assert.ok(retry.retryInMs > 0 && retry.retryInMs <= FAST.baseMs, `0 < ${retry.retryInMs} ≤ ${FAST.baseMs}`);
    assert.equal(c.tokens.length, 1);
    c.stop();
    await s.close();
  });
}

test('backoff grows per failed try up to maxMs, and a stable connection resets it', async () => {
  let now = Date.now();
  const s = await FakeServer.start((conn, i) => {
    if (i < 5) return conn.cut();
    conn.greet();
    // Up "11 s" (injected clock), then cut: the next wait starts over.
    setTimeout(() => {
      now += 11_000;
      if (i === 5) conn.cut();
    }, 20);
  });
  const c = client(s, { random: () => 0.99, now: () => now });
  c.start();
  await until(() => s.connections.length === 7 && c.state === 'connected', 5000);
  const waits = c.states.filter((x) => x.to === 'reconnecting').map((x) => x.retryInMs);
  // 20, 40, 80, 100 (max), 100, then reset: 20 — all × 0.99.
  assert.deepEqual(waits, [20, 40, 79, 99, 99, 20]);
  c.stop();
  await s.close();
});
