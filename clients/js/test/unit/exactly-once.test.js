// Every stored event exactly once, in seq order: since, replays,
// duplicates, out-of-order seqs, holes, gaps, lastSeq and storage.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { FakeServer, cleanup, client, ev, sleep, until } from './helpers/fake-server.js';

afterEach(cleanup);

const seqs = (c) => c.seen.map((e) => e.seq);
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

test('a fresh client starts at the server lastSeq, then hands out live events once, in order', async () => {
  const s = await FakeServer.start((conn) => {
    conn.greet({ lastSeq: 5 });
    // Live, with a duplicate, an old one and an out-of-order pair.
    for (const n of [6, 7, 7, 3, 9, 8, 10, 9]) conn.send(ev(n));
  });
  const c = client(s);
  const named = [];
  c.on('dtmf-received', (data, e) => named.push(e.seq));
  c.start();
  const conn = await s.connection(0);
  await until(() => c.lastSeq === 10, 5000, 'seq 10');
  assert.equal(conn.since, undefined, 'no since on a fresh start');
  assert.deepEqual(seqs(c), [6, 7, 8, 9, 10]);
  assert.deepEqual(named, [6, 7, 8, 9, 10], 'also emitted under its own name');
  assert.deepEqual(c.seen[0], ev(6, 'dtmf-received', {}, c.seen[0].ts));
  c.stop();
  await s.close();
});

test('reconnects resume with since=lastSeq; replays overlapping what was seen are deduplicated', async () => {
  // Events 1..30 exist; each connection is cut after a few live ones.
  const all = range(1, 30).map((n) => ev(n));
  const s = await FakeServer.start((conn, i) => {
    const from = conn.since ?? 0;
    // The replay starts a little before `since` (duplicates) and ends at 10 × i.
    const upto = Math.min(30, 10 * (i + 1));
    conn.greet({ lastSeq: conn.since === undefined ? 0 : upto, replay: all.slice(Math.max(0, from - 3), from + 2) });
    for (const e of all.slice(Math.max(0, from - 1), upto)) conn.send(e);
    if (i < 2) setTimeout(() => conn.cut(), 30);
  });
  const c = client(s);
  c.start();
  await until(() => c.lastSeq === 30, 8000, 'all 30');
  assert.deepEqual(seqs(c), range(1, 30));
  assert.equal(s.connections[0].since, undefined);
  assert.equal(s.connections[1].since, 10);
  assert.equal(s.connections[2].since, 20);
  assert.equal(new Set(c.seen.map((e) => e.id)).size, 30);
  c.stop();
  await s.close();
});

test('after the first connection, reconnects send since even when it is 0', async () => {
  const s = await FakeServer.start((conn, i) => {
    conn.greet({ lastSeq: 0 });
    if (i === 0) setTimeout(() => conn.cut(), 20);
  });
  const c = client(s);
  c.start();
  const second = await s.connection(1);
  assert.equal(second.since, 0);
  c.stop();
  await s.close();
});

test('an event ahead of a hole is held until the hole fills', async () => {
  let conn;
  const s = await FakeServer.start((x) => {
    conn = x;
    x.greet({ lastSeq: 1 });
  });
  const c = client(s, { holeTimeoutMs: 5000 });
  c.start();
  await until(() => c.state === 'connected');
  conn.send(ev(4));
  conn.send(ev(3));
  await sleep(50);
  assert.deepEqual(seqs(c), [], 'held back');
  assert.equal(c.lastSeq, 1);
  conn.send(ev(2));
  await until(() => c.lastSeq === 4);
  assert.deepEqual(seqs(c), [2, 3, 4]);
  c.stop();
  await s.close();
});

test('a hole not filled in time makes the client ask: resume since=lastSeq', async () => {
  let conn;
  const s = await FakeServer.start((x) => {
    conn = x;
    x.greet({ lastSeq: 1 });
  });
  const c = client(s, { holeTimeoutMs: 100 });
  c.start();
  await until(() => c.state === 'connected');
  conn.send(ev(2));
  conn.send(ev(5));
  const resume = await conn.next('resume');
  assert.deepEqual(resume, { type: 'resume', since: 2 });
  // The server replays after 2 (5 again included), then resumed, snapshot.
  for (const n of [3, 4, 5]) conn.send(ev(n));
  conn.send({ event: 'resumed', data: { from: 2, to: 5, gap: false } });
  conn.send({ event: 'snapshot', data: { status: 'available', activeCalls: [] } });
  conn.send(ev(6));
  await until(() => c.lastSeq === 6);
  assert.deepEqual(seqs(c), [2, 3, 4, 5, 6]);
  assert.equal(conn.received.filter((m) => m.type === 'resume').length, 1, 'asked once');
  c.stop();
  await s.close();
});

test("resumed.gap: 'gap' is emitted, then the events after it are accepted", async () => {
  // History was trimmed: the client had 5, the server keeps 100.. only.
  const s = await FakeServer.start((conn) => {
    conn.greet({ lastSeq: 102, replay: [ev(100), ev(101), ev(102)], gap: true });
    conn.send(ev(103));
  });
  const c = client(s, { lastSeq: 5 });
  const gaps = [];
  const order = [];
  c.on('gap', (g) => {
    gaps.push(g);
    order.push('gap');
  });
  c.on('event', (e) => order.push(e.seq));
  c.start();
  await until(() => c.lastSeq === 103);
  assert.equal(s.connections[0].since, 5);
  assert.deepEqual(gaps, [{ from: 5, to: 102 }]);
  assert.deepEqual(order, ['gap', 100, 101, 102, 103], 'gap first, then the events after it');
  c.stop();
  await s.close();
});

test('resumed.gap with a server whose history restarted: lastSeq follows the server down', async () => {
  const s = await FakeServer.start((conn) => {
    conn.greet({ lastSeq: 3, replay: [], gap: true });
    conn.send(ev(4));
  });
  const c = client(s, { lastSeq: 500 });
  const gaps = [];
  c.on('gap', (g) => gaps.push(g));
  c.start();
  await until(() => c.lastSeq === 4);
  assert.deepEqual(gaps, [{ from: 500, to: 3 }]);
  assert.deepEqual(seqs(c), [4]);
  c.stop();
  await s.close();
});

test('lastSeq option: the first connection resumes from it', async () => {
  const s = await FakeServer.start((conn) => conn.greet({ lastSeq: 9, replay: [ev(8), ev(9)] }));
  const c = client(s, { lastSeq: 7 });
  assert.equal(c.lastSeq, 0);
  c.start();
  await until(() => c.lastSeq === 9);
  assert.equal(s.connections[0].since, 7);
  assert.deepEqual(seqs(c), [8, 9]);
  c.stop();
  await s.close();
});

test('storage: loaded at start (the lastSeq option wins), saved after every event', async () => {
  const saved = [];
  const storage = {
    async get() {
      return 41;
    },
    set(n) {
      saved.push(n);
    },
  };
  const s = await FakeServer.start((conn) => {
    conn.greet({ lastSeq: 43, replay: [ev(42), ev(43)] });
    conn.send(ev(44));
  });
  const c = client(s, { storage });
  c.start();
  await until(() => c.lastSeq === 44);
  assert.equal(s.connections[0].since, 41);
  assert.deepEqual(saved, [42, 43, 44]);
  c.stop();

  const c2 = client(s, { storage, lastSeq: 43 });
  c2.start();
  await until(() => s.connections.length === 2);
  assert.equal(s.connections[1].since, 43, 'the option wins over storage');
  await until(() => c2.lastSeq === 44);
  c2.stop();

  // A fresh start (nothing stored) saves the server's lastSeq right away.
  const fresh = [];
  const c3 = client(s, { storage: { get: () => undefined, set: (n) => fresh.push(n) } });
  c3.start();
  await until(() => fresh.length > 0 && c3.lastSeq === 44);
  assert.equal(s.connections[2].since, undefined);
  assert.deepEqual(fresh, [43, 44]);
  c3.stop();
  await s.close();
});

test('a storage that throws costs nothing but the resume point', async () => {
  const s = await FakeServer.start((conn) => {
    conn.greet({ lastSeq: 0 });
    conn.send(ev(1));
  });
  const storage = {
    get() {
      throw new Error('no storage');
    },
    set() {
      throw new Error('full');
    },
  };
  const c = client(s, { storage });
  c.start();
  await until(() => c.lastSeq === 1);
  assert.equal(s.connections[0].since, undefined);
  c.stop();
  await s.close();
});

test('webStorage(key) keeps lastSeq in a Web Storage object', async () => {
  const { webStorage } = await import('../../dist/index.js');
  const map = new Map();
  const fake = { getItem: (k) => map.get(k) ?? null, setItem: (k, v) => map.set(k, String(v)) };
  const st = webStorage('seq.u1', fake);
  assert.equal(st.get(), undefined);
  st.set(12);
  assert.equal(map.get('seq.u1'), '12');
  assert.equal(st.get(), 12);
  const s = await FakeServer.start((conn) => conn.greet({ lastSeq: 13, replay: [ev(13)] }));
  const c = client(s, { storage: st });
  c.start();
  await until(() => c.lastSeq === 13);
  assert.equal(s.connections[0].since, 12);
  assert.equal(map.get('seq.u1'), '13');
});
