// The dead-connection check (ping every heartbeatSecs, dead after
// 2 × heartbeatSecs + margin of silence, by wall-clock comparison),
// black-holed sockets, timer jumps, reconnectNow() and `online`.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { FakeServer, cleanup, client, ev, sleep, until } from './helpers/fake-server.js';

afterEach(cleanup);

test('pings every heartbeatSecs while the server is quiet, and stays connected', async () => {
  const s = await FakeServer.start((conn) => conn.greet({ heartbeatSecs: 0.1 }));
  const c = client(s, { deadMarginMs: 100 });
  c.start();
  const conn = await s.connection(0);
  await until(() => conn.received.filter((m) => m.type === 'ping').length >= 4, 5000, 'four pings');
  assert.deepEqual(conn.raw[0], '{"type":"ping","data":{}}');
  assert.equal(c.state, 'connected');
  assert.equal(s.connections.length, 1, 'answered pings keep it alive');
  c.stop();
  await s.close();
});

test('pings keep their rhythm while events keep arriving', async () => {
  let timer;
  const s = await FakeServer.start((conn) => {
    conn.greet({ heartbeatSecs: 0.1 });
    let n = 0;
    timer = setInterval(() => conn.send(ev(++n)), 20);
  });
  const c = client(s, { deadMarginMs: 100 });
  c.start();
  const conn = await s.connection(0);
  try {
    await until(() => conn.received.filter((m) => m.type === 'ping').length >= 3, 5000, 'three pings');
  } finally {
    clearInterval(timer);
  }
  assert.ok(c.lastSeq > 10);
});

test('a black-holed connection (nothing arrives any more) is found dead and replaced', async () => {
  const s = await FakeServer.start((conn, i) => {
    conn.greet({ heartbeatSecs: 0.1 });
    // The first connection swallows everything: no pongs, no close.
    if (i === 0) conn.answerPings = false;
  });
  const c = client(s, { deadMarginMs: 200 });
  c.start();
  await until(() => s.connections.length === 2 && c.state === 'connected', 5000, 'a new connection');
  const retry = c.states.find((x) => x.to === 'reconnecting');
  assert.match(retry.reason, /nothing received/);
  assert.equal(retry.closeCode, undefined);
  assert.ok(s.connections[0].received.some((m) => m.type === 'ping'), 'it pinged first');
  assert.equal(s.connections[1].since, 0, 'resumes');
  c.stop();
  await s.close();
});

test('a timer jump (sleep): 10 minutes later by the wall clock, the next tick reconnects', async () => {
  let offset = 0;
  const s = await FakeServer.start((conn) => conn.greet({ heartbeatSecs: 0.2 }));
  // A real margin of 5 s: only the clock jump can make it dead this soon.
  const c = client(s, { now: () => Date.now() + offset });
  c.start();
  await until(() => c.state === 'connected');
  await sleep(300);
  assert.equal(s.connections.length, 1);
  offset = 10 * 60_000;
  await until(() => s.connections.length === 2, 3000, 'the reconnect after the jump');
  await until(() => c.state === 'connected');
  assert.match(c.states.find((x) => x.to === 'reconnecting').reason, /nothing received for 60\d s/);
  c.stop();
  await s.close();
});

test('reconnectNow() skips a pending backoff wait', async () => {
  const s = await FakeServer.start((conn, i) => {
    if (i === 0) return conn.cut();
    conn.greet();
  });
  // A backoff of ~54 s: only reconnectNow() can bring it back in time.
  const c = client(s, { backoff: { baseMs: 60_000, maxMs: 60_000 }, random: () => 0.9 });
  c.start();
  await until(() => c.state === 'reconnecting');
  assert.equal(c.states.at(-1).retryInMs, 54_000);
  c.reconnectNow();
  await until(() => c.state === 'connected', 3000, 'connected after reconnectNow');
  assert.equal(s.connections.length, 2);
  c.stop();
  await s.close();
});

test('reconnectNow() while connected replaces the connection and resumes', async () => {
  const s = await FakeServer.start((conn) => conn.greet({ lastSeq: 3 }));
  const c = client(s);
  c.start();
  await until(() => c.state === 'connected');
  c.reconnectNow();
  await until(() => s.connections.length === 2 && c.state === 'connected');
  await until(() => s.connections[0].closed, 2000, 'the old socket closed');
  assert.equal(s.connections[1].since, 3);
  assert.deepEqual(
    c.states.map((x) => x.to),
    ['connecting', 'connected', 'reconnecting', 'connected'],
  );
  assert.equal(c.states[2].retryInMs, 0);
  c.stop();
  await s.close();
});

test("the browser's online event skips the wait, or probes a connection that may be dead", async () => {
  // A browser-like global: Node 20 has no window.addEventListener.
  const target = new EventTarget();
  globalThis.addEventListener = target.addEventListener.bind(target);
  globalThis.removeEventListener = target.removeEventListener.bind(target);
  try {
    const s = await FakeServer.start((conn, i) => {
      if (i === 0) return conn.cut();
      conn.greet();
      if (i === 1) conn.answerPings = false;
    });
    const c = client(s, { backoff: { baseMs: 60_000, maxMs: 60_000 } });
    c.start();
    await until(() => c.state === 'reconnecting');
    target.dispatchEvent(new Event('online'));
    await until(() => c.state === 'connected', 3000, 'connected after online');
    // Connected, but this connection does not answer: online → ping probe → dropped.
    target.dispatchEvent(new Event('online'));
    await s.connection(1).then((conn) => conn.next('ping', 2000, true));
    await until(() => c.state === 'reconnecting', 6000, 'the probe to drop it');
    assert.match(c.states.at(-1).reason, /online/);
    target.dispatchEvent(new Event('online'));
    await until(() => s.connections.length === 3 && c.state === 'connected', 3000, 'connected again');
    c.stop();
    await s.close();
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  }
});
