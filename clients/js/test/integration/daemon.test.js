// The package against the real release daemon, through a TCP proxy that
// cuts and black-holes connections: every event exactly once and in order,
// short tokens refreshed without a gap, revoke stops for good, `lastSeq`
// resumes, `send` and signed `setStatus` work.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { CallbridgeClient } from '../../dist/index.js';
import { DEMO, Daemon, Proxy, sleep, until } from './harness.js';

/** A client on `proxy` (or straight to the daemon), recording what it hands out. */
function client(d, { url, getToken, ...opts } = {}) {
  const c = new CallbridgeClient({
    url: url ?? `wss://127.0.0.1:${d.port}/ws`,
    getToken: getToken ?? (async () => d.token()),
    WebSocket: d.WebSocket,
    ...opts,
  });
  c.seen = [];
  c.states = [];
  c.on('event', (ev) => c.seen.push(ev));
  c.on('state', (s) => c.states.push(s));
  return c;
}

const connected = (c) => until(() => c.state === 'connected', 15_000, 'connected');

/** The events handed out are exactly seq from+1..to, once each, in order. */
function assertExactlyOnceInOrder(events, from, to) {
  const seqs = events.map((e) => e.seq);
  const want = Array.from({ length: to - from }, (_, i) => from + 1 + i);
  assert.deepEqual(seqs, want);
  assert.equal(new Set(events.map((e) => e.id)).size, events.length, 'no id twice');
}

describe('against the real daemon', { timeout: 180_000 }, () => {
  let d;
  before(async () => {
    // 1 s server pings: the client's dead-connection check (2 × heartbeat + 5 s)
    // then fires within 7 s of a black hole.
    d = await Daemon.start({ CALLBRIDGE_PING_INTERVAL_SECS: '1' });
  });
  after(async () => d.stop());

  test('60 events across three cuts and a black hole arrive exactly once, in order', async () => {
    const proxy = await Proxy.start(d.port);
    const c = client(d, { url: proxy.url() });
    c.start();
    await connected(c);
    const start = c.lastSeq;
    const ids = [];
    const post = async (n) => {
      for (let i = 0; i < n; i++) {
        ids.push(await d.callEvent('call.dtmf.received', `cuts-${ids.length % 3}`, { digit: '5' }));
      }
    };
    const drops = () => c.states.filter((s) => s.from === 'connected' && s.to === 'reconnecting').length;
    // Two cuts, each followed by events stored while the client is away.
    for (let round = 0; round < 2; round++) {
      await post(10);
      proxy.cut();
      await post(5);
      await connected(c);
    }
    // A black hole: nothing gets through, nothing is closed. The client's
    // own ping finds it (2 × heartbeat + 5 s: 7 s with 1 s server pings).
    await post(10);
    const before = drops();
    proxy.blackhole();
    await post(5);
    await until(() => drops() > before, 15_000, 'the dead connection to be noticed');
    proxy.heal();
    await connected(c);
    // A third cut, in the middle of live events.
    await post(5);
    proxy.cut();
    await post(10);
    await until(() => c.seen.length >= 60, 30_000, 'all 60 events');
    await sleep(300);
    assertExactlyOnceInOrder(c.seen, start, start + 60);
    assert.deepEqual(c.seen.map((e) => e.id), ids);
    assert.ok(drops() >= 4, `dropped and came back 4 times (${JSON.stringify(c.states)})`);
    assert.ok(proxy.connections >= 5, `reconnected through the proxy (${proxy.connections} connections)`);
    c.stop();
    await proxy.close();
  });

  test('8 s tokens are refreshed on the open connection without a gap', async () => {
    let calls = 0;
    const c = client(d, {
      getToken: async () => {
        calls += 1;
        return d.token(DEMO, 8);
      },
    });
    c.start();
    await connected(c);
    const start = c.lastSeq;
    const codes = [];
    c.on('state', (s) => s.closeCode && codes.push(s.closeCode));
    for (let i = 0; i < 40; i++) {
      await d.callEvent('call.dtmf.received', 'short-tokens', { digit: '1' });
      await sleep(500);
    }
    await until(() => c.seen.length >= 40, 10_000, '40 events');
    assertExactlyOnceInOrder(c.seen, start, start + 40);
    assert.ok(calls >= 3, `getToken called ${calls} times over 20 s of 8 s tokens`);
    assert.ok(!codes.includes(4001), `the token never expired on the connection (${codes})`);
    c.stop();
  });

  test('a client created with lastSeq gets only newer events', async () => {
    for (let i = 0; i < 3; i++) await d.callEvent('call.dtmf.received', 'resume', { digit: '2' });
    const last = (await d.admin('GET', `/api/users/${DEMO}`)).body;
    assert.equal(typeof last.id, 'string');
    const probe = client(d);
    probe.start();
    await connected(probe);
    const top = probe.lastSeq;
    probe.stop();
    const c = client(d, { lastSeq: top - 2 });
    c.start();
    await until(() => c.seen.length >= 2, 10_000, 'the two newer events');
    await d.callEvent('call.dtmf.received', 'resume', { digit: '3' });
    await until(() => c.seen.length >= 3, 10_000, 'the live one');
    assertExactlyOnceInOrder(c.seen, top - 2, top + 1);
    c.stop();
  });

  test('send resolves with the sent data; signed setStatus is applied', async () => {
    const s = await Daemon.start({ CALLBRIDGE_CLIENT_SIGNING: 'required' });
    try {
      const c = client(s);
      const messages = [];
      c.on('message', (data) => messages.push(data));
      c.start();
      await connected(c);
      const sent = await c.send({ to: DEMO, payload: { text: 'hello', n: 1 } });
      assert.deepEqual(sent.recipients, []);
      assert.match(sent.id, /^msg_/);
      await until(() => messages.length === 1, 10_000, 'the stored message');
      assert.deepEqual(messages[0].payload, { text: 'hello', n: 1 });
      await assert.rejects(c.send({ to: 'nobody', payload: 1 }), (e) => e.code === 'unknown-recipient');
      await c.setStatus('away');
      await until(async () => (await s.admin('GET', `/api/users/${DEMO}`)).body.status === 'away', 10_000, 'status away');
      c.stop();
    } finally {
      await s.stop();
    }
  });

  test('revoke stops the client for good', async () => {
    const c = client(d);
    const stopped = [];
    c.on('stopped', (e) => stopped.push(e));
    c.start();
    await connected(c);
    await sleep(1100); // the revoke covers tokens issued up to its second
    const r = await d.admin('POST', `/api/users/${DEMO}/revoke`);
    assert.equal(r.status, 200, r.text);
    await until(() => c.state === 'stopped', 10_000, 'stopped');
    assert.equal(stopped[0].closeCode, 4003);
    await sleep(2000);
    assert.equal(c.state, 'stopped');
    assert.equal(c.states.filter((s) => s.to === 'connecting').length, 1, 'never tried again');
  });
});
