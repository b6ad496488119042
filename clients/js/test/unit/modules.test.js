// The client's internal modules, each alone against fake hosts, a fake
// clock and hand-run timers (no sockets): backoff, in-order delivery,
// requests awaiting answers, the dead-connection check, tokens.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Backoff } from '../../dist/backoff.js';
import { Delivery } from '../../dist/delivery.js';
import { Liveness, PING } from '../../dist/liveness.js';
import { Requests } from '../../dist/requests.js';
import { Tokens } from '../../dist/tokens.js';
import { jwt } from './helpers/fake-server.js';

/** Timers run by hand: `fire()` runs those due at the fake time `now`. */
function fakeTimers() {
  const t = {
    now: 0,
    queue: new Map(),
    n: 0,
    set(fn, ms) {
      const id = ++t.n;
      t.queue.set(id, { fn, at: t.now + ms });
      return id;
    },
    clear(id) {
      t.queue.delete(id);
    },
    /** Move the clock by `ms` and run what came due, in time order. */
    advance(ms) {
      t.now += ms;
      for (;;) {
        const due = [...t.queue].filter(([, x]) => x.at <= t.now).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) return;
        t.queue.delete(due[0]);
        due[1].fn();
      }
    },
  };
  return t;
}

const BO = { baseMs: 500, maxMs: 20_000, floorMs: 5_000, restartMaxMs: 5_000, resetAfterMs: 10_000 };
const tick = () => new Promise((r) => setImmediate(r));

test('Backoff: full jitter doubling to maxMs; close actions; reset after a long connection', () => {
  const b = new Backoff(BO, () => 0.5);
  assert.equal(b.delay(), 250);
  assert.equal(b.soon(), 0, 'at once on the first try');
  b.attempt = 3;
  assert.equal(b.delay(), 2000);
  assert.equal(b.soon(), 2000, 'not at once after failed tries');
  assert.equal(b.afterClose('reconnect-now'), 2000);
  assert.equal(b.afterClose('backoff-floor'), 20_000, 'floor plus a growing share, capped at maxMs');
  b.attempt = 0;
  assert.equal(b.afterClose('backoff-floor'), 7_500);
  assert.equal(b.afterClose('restart-jitter'), 2_500);
  b.attempt = 30;
  assert.equal(b.delay(), 10_000, 'maxMs × random');
  b.ended(9_999);
  assert.equal(b.attempt, 30);
  b.ended(undefined);
  assert.equal(b.attempt, 30, 'never connected: no reset');
  b.ended(10_000);
  assert.equal(b.attempt, 0);
});

function delivery(opts = {}) {
  const timers = fakeTimers();
  const out = { seqs: [], gaps: [], resumes: [], resumed: [], ready: true };
  const saved = [];
  const d = new Delivery(
    {
      deliver: (f) => out.seqs.push(f.seq),
      resumed: (data) => out.resumed.push(data),
      gap: (g) => out.gaps.push(g),
      resume: (since) => (out.ready ? (out.resumes.push(since), true) : false),
    },
    { lastSeq: undefined, storage: { get: () => opts.stored, set: (s) => saved.push(s) }, holeTimeoutMs: 2000, ...opts },
    timers,
  );
  return { d, out, timers, saved };
}
const frame = (seq) => ({ event: 'dtmf-received', data: {}, seq, id: `ev-${seq}`, ts: '' });

test('Delivery: resume point from the option or storage; a fresh start takes the server lastSeq', async () => {
  const fresh = delivery();
  await fresh.d.load();
  assert.equal(fresh.d.since(), undefined);
  fresh.d.connected(false, 7);
  assert.equal(fresh.d.lastSeq, 7);
  assert.equal(fresh.d.since(), 7);
  assert.deepEqual(fresh.saved, [7]);
  const stored = delivery({ stored: 4 });
  await stored.d.load();
  assert.equal(stored.d.since(), 4);
  stored.d.connected(true, 9);
  assert.equal(stored.d.lastSeq, 4, 'with since, the replay moves lastSeq');
  const given = delivery({ stored: 4, lastSeq: 2 });
  await given.d.load();
  assert.equal(given.d.since(), 2, 'the option wins over storage');
});

test('Delivery: in order, duplicates dropped, held until the hole fills, saved after each', async () => {
  const { d, out, saved } = delivery();
  await d.load();
  d.connected(false, 0);
  for (const n of [1, 2, 2, 1, 4, 5, 3, 6]) d.stored(frame(n));
  assert.deepEqual(out.seqs, [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(saved.slice(-6), [1, 2, 3, 4, 5, 6]);
  assert.equal(d.lastSeq, 6);
});

test('Delivery: a hole that stays asks for one resume; a gap in resumed moves on and says so', async () => {
  const { d, out, timers } = delivery();
  await d.load();
  d.connected(false, 1);
  d.stored(frame(4));
  d.stored(frame(5));
  timers.advance(1999);
  assert.deepEqual(out.resumes, []);
  timers.advance(1);
  assert.deepEqual(out.resumes, [1]);
  d.stored(frame(6));
  timers.advance(5000);
  assert.deepEqual(out.resumes, [1], 'asked once');
  d.resumed({ from: 1, to: 1, gap: true });
  assert.deepEqual(out.resumed, [{ from: 1, to: 1, gap: true }]);
  assert.deepEqual(out.gaps, [{ from: 1, to: 1 }]);
  assert.deepEqual(out.seqs, [4, 5, 6]);
});

test('Delivery: reset() drops held events; a resume is not asked without a ready connection', async () => {
  const { d, out, timers } = delivery();
  await d.load();
  d.connected(false, 0);
  out.ready = false;
  d.stored(frame(3));
  timers.advance(2000);
  assert.deepEqual(out.resumes, []);
  d.reset();
  d.stored(frame(1));
  d.stored(frame(2));
  assert.deepEqual(out.seqs, [1, 2], '3 was dropped with the connection');
});

function requests() {
  const timers = fakeTimers();
  const st = { started: true, ready: true, written: [], failWrite: undefined };
  const write = async (msg) => {
    if (st.failWrite) throw st.failWrite;
    st.written.push(msg);
  };
  const r = new Requests({ started: () => st.started, writer: () => (st.ready ? write : undefined) }, timers);
  return { r, st, timers, write };
}

test('Requests: a ref each, answered by the frame that echoes it; errors reject with the code', async () => {
  const { r, st } = requests();
  const a = r.request({ type: 'send', to: 'u2' }, { ackOnWrite: false, timeoutMs: 100 });
  const b = r.request({ type: 'send', to: 'u3' }, { ackOnWrite: false, timeoutMs: 100 });
  await tick();
  const [ma, mb] = st.written;
  assert.notEqual(ma.ref, mb.ref);
  r.answer({ ref: mb.ref, id: 'm2' });
  assert.deepEqual(await b, { ref: mb.ref, id: 'm2' });
  assert.equal(r.error({ ref: 'other', code: 'x' }), false, 'an error for no request');
  assert.equal(r.error({ ref: ma.ref, code: 'unknown-recipient', message: 'no such user' }), true);
  await assert.rejects(a, { name: 'CallbridgeError', code: 'unknown-recipient', message: 'no such user' });
});

test('Requests: ackOnWrite resolves once written with no ref; timeout; not started', async () => {
  const { r, st, timers } = requests();
  await r.request({ type: 'status', status: 'away' }, { ackOnWrite: true, timeoutMs: 100 });
  assert.deepEqual(st.written, [{ type: 'status', status: 'away' }]);
  const p = r.request({ type: 'send' }, { ackOnWrite: false, timeoutMs: 100 });
  timers.advance(100);
  await assert.rejects(p, { code: 'timeout', message: 'no answer within 100 ms' });
  st.started = false;
  await assert.rejects(r.request({ type: 'send' }, { ackOnWrite: false, timeoutMs: 100 }), { code: 'not-connected' });
});

test('Requests: made while not ready, written on flush; lost() fails only what was written; stopped() the rest', async () => {
  const { r, st, write } = requests();
  const written = r.request({ type: 'send', n: 1 }, { ackOnWrite: false, timeoutMs: 1000 });
  await tick();
  st.ready = false;
  const waiting = r.request({ type: 'send', n: 2 }, { ackOnWrite: false, timeoutMs: 1000 });
  r.lost();
  await assert.rejects(written, { code: 'connection-lost' });
  r.flush(write);
  await tick();
  assert.deepEqual(st.written.map((m) => m.n), [1, 2]);
  const third = r.request({ type: 'send', n: 3 }, { ackOnWrite: false, timeoutMs: 1000 });
  r.stopped();
  await assert.rejects(waiting, { code: 'not-connected' });
  await assert.rejects(third, { code: 'not-connected' });
  st.failWrite = Object.assign(new Error('signing failed'), { code: 'signing-unavailable' });
  st.ready = true;
  await assert.rejects(r.request({ type: 'send' }, { ackOnWrite: false, timeoutMs: 1000 }), { code: 'signing-unavailable' });
});

test('Liveness: pings every heartbeat; dead after 2 × heartbeat + margin of silence, seen by a late tick', () => {
  const timers = fakeTimers();
  const pings = [];
  const dead = [];
  const conn = { ready: true, heartbeatMs: 1000, lastHeard: 0, lastPingAt: 0 };
  const l = new Liveness(
    { now: () => timers.now, isCurrent: () => true, ping: () => pings.push(timers.now), dead: (c, why) => dead.push(why), alive: () => {} },
    timers,
    500,
  );
  l.arm(conn, conn.heartbeatMs);
  timers.advance(1000);
  timers.advance(1000);
  assert.deepEqual(pings, [1000, 2000]);
  l.heard(conn);
  l.rearm(conn);
  // The laptop sleeps: the next tick comes 10 s late and sees the silence at once.
  timers.now += 10_000;
  timers.advance(0);
  assert.deepEqual(dead, ['nothing received for 10 s']);
  assert.equal(PING, '{"type":"ping","data":{}}');
});

test('Liveness: an online probe without an answer within 3 s is dead', () => {
  const timers = fakeTimers();
  const dead = [];
  const conn = { ready: true, heartbeatMs: 25_000, lastHeard: 0, lastPingAt: 0 };
  const l = new Liveness(
    { now: () => timers.now, isCurrent: () => true, ping: () => {}, dead: (c, why) => dead.push(why), alive: () => {} },
    timers,
    5000,
  );
  l.probe(conn);
  timers.advance(3000);
  assert.deepEqual(dead, ['no answer to a ping after going online']);
});

test('Tokens: one getToken at a time; reused while fresh; invalidate() and due tokens fetch anew', async () => {
  const timers = fakeTimers();
  let calls = 0;
  let release;
  const tokens = new Tokens(
    () =>
      new Promise((r) => {
        calls++;
        release = () => r(jwt({ n: calls, iat: Math.floor(timers.now / 1000), lifetimeSecs: 100 }));
      }),
    { now: () => timers.now, current: () => undefined, sendAuth: async () => {}, halt: () => {} },
    timers,
    2000,
  );
  const a = tokens.forConnect();
  const b = tokens.fetch();
  release();
  assert.equal(await a, await b);
  assert.equal(calls, 1, 'shared');
  assert.equal(await tokens.forConnect(), await a, 'fresh: reused');
  tokens.invalidate();
  const c = tokens.forConnect();
  release();
  assert.notEqual(await c, await a);
  timers.now += 80_000; // past 80% of the lifetime
  const d = tokens.forConnect();
  release();
  await d;
  assert.equal(calls, 3);
});

test('Tokens: refresh sends auth on the ready connection, and halts on no token', async () => {
  const timers = fakeTimers();
  const conn = { ready: true, token: 'old' };
  const sent = [];
  const halted = [];
  let next = 'new';
  const tokens = new Tokens(
    async () => next,
    {
      now: () => timers.now,
      current: () => conn,
      sendAuth: async (c, t) => {
        sent.push(t);
        c.token = t;
      },
      halt: (why) => halted.push(why),
    },
    timers,
    2000,
  );
  await tokens.refresh();
  assert.deepEqual(sent, ['new']);
  assert.equal(conn.token, 'new');
  await tokens.refresh();
  assert.deepEqual(sent, ['new'], 'the same token is not sent again');
  next = null;
  await tokens.refresh();
  assert.deepEqual(halted, ['getToken returned no token']);
});
