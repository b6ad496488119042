// activeCalls: from each snapshot, kept current by call events with the
// server's rules (hangup is final, late and repeated events never revive).

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { FakeServer, cleanup, client, ev, until } from './helpers/fake-server.js';

afterEach(cleanup);

const T = (s) => `2025-06-01T10:00:${String(s).padStart(2, '0')}Z`;
const call = (name, id, at, extra = {}) => ({ callControlId: id, callSessionId: `s-${id}`, direction: 'inbound', from: '+15551230001', to: '+15550000001', occurredAt: T(at), ...extra });

async function connected(snapshotCalls = []) {
  let conn;
  const s = await FakeServer.start((x) => {
    conn = x;
    x.greet({ activeCalls: snapshotCalls });
  });
  const c = client(s);
  const changes = [];
  c.on('calls', (list) => changes.push(list));
  c.start();
  await until(() => c.state === 'connected' && changes.length === 1, 5000, 'the snapshot');
  let seq = 0;
  const push = async (name, data) => {
    seq++;
    conn.send(ev(seq, name, data, data.occurredAt));
    await until(() => c.lastSeq === seq);
  };
  return { c, conn, push, changes };
}

test('the snapshot sets activeCalls; initiated → ringing, answered, bridged, hangup removes', async () => {
  const snap = [{ callControlId: 'old', direction: 'outbound', from: '+1', to: '+2', state: 'answered', startedAt: T(0), answeredAt: T(1) }];
  const { c, push, changes } = await connected(snap);
  assert.deepEqual(c.activeCalls, snap);
  await push('call-initiated', call('call-initiated', 'cc1', 10, { startTime: T(9) }));
  assert.deepEqual(c.activeCalls[1], {
    callControlId: 'cc1',
    callSessionId: 's-cc1',
    direction: 'inbound',
    from: '+15551230001',
    to: '+15550000001',
    state: 'ringing',
    startedAt: T(9),
  });
  await push('call-answered', call('call-answered', 'cc1', 12));
  assert.equal(c.activeCalls[1].state, 'answered');
  assert.equal(c.activeCalls[1].answeredAt, T(12));
  await push('call-bridged', call('call-bridged', 'cc1', 13));
  assert.equal(c.activeCalls[1].state, 'bridged');
  await push('dtmf-received', call('dtmf-received', 'cc1', 14, { digit: '5' }));
  assert.equal(c.activeCalls[1].state, 'bridged', 'other events change nothing');
  await push('call-hangup', call('call-hangup', 'cc1', 20, { hangupCause: 'normal_clearing' }));
  assert.deepEqual(c.activeCalls.map((x) => x.callControlId), ['old']);
  await push('call-hangup', call('call-hangup', 'old', 21));
  assert.deepEqual(c.activeCalls, []);
  // snapshot, initiated, answered, bridged, hangup, hangup: 'calls' only on change.
  assert.equal(changes.length, 6);
});

test('a hangup is final: late or repeated events never revive the call', async () => {
  const { c, push } = await connected();
  await push('call-initiated', call('call-initiated', 'cc1', 10));
  await push('call-hangup', call('call-hangup', 'cc1', 20));
  await push('call-answered', call('call-answered', 'cc1', 15));
  await push('call-initiated', call('call-initiated', 'cc1', 10));
  await push('call-bridged', call('call-bridged', 'cc1', 30));
  assert.deepEqual(c.activeCalls, []);
});

test('state follows occurredAt: a late (older) event only fills blanks; a repeated one changes nothing', async () => {
  const { c, push, changes } = await connected();
  // answered arrives before initiated (Telnyx delivered them out of order).
  await push('call-answered', call('call-answered', 'cc1', 12, { from: undefined }));
  await push('call-initiated', call('call-initiated', 'cc1', 10, { callerIdName: 'Ann' }));
  assert.equal(c.activeCalls[0].state, 'answered', 'the older initiated does not set ringing');
  assert.equal(c.activeCalls[0].from, '+15551230001', 'but it fills a blank');
  assert.equal(c.activeCalls[0].startedAt, T(10));
  const before = changes.length;
  await push('call-answered', call('call-answered', 'cc1', 12));
  assert.equal(changes.length, before, 'a repeat changes nothing');
});

test('typed names: each call event also under its own name with (data, ev)', async () => {
  const { c, push } = await connected();
  const got = [];
  c.on('call-hangup', (data, e) => got.push([data.hangupCause, e.seq, e.event]));
  await push('call-initiated', call('call-initiated', 'cc9', 1));
  await push('call-hangup', call('call-hangup', 'cc9', 2, { hangupCause: 'busy' }));
  assert.deepEqual(got, [['busy', 2, 'call-hangup']]);
});

test('a later snapshot replaces the calls, except ones this client saw hang up', async () => {
  const { c, conn, push } = await connected();
  await push('call-initiated', call('call-initiated', 'a', 1));
  await push('call-hangup', call('call-hangup', 'a', 2));
  conn.send({
    event: 'snapshot',
    data: {
      status: 'available',
      activeCalls: [
        { callControlId: 'a', state: 'ringing' },
        { callControlId: 'b', state: 'bridged', startedAt: T(3) },
      ],
    },
  });
  await until(() => c.activeCalls.length === 1);
  assert.deepEqual(c.activeCalls, [{ callControlId: 'b', state: 'bridged', startedAt: T(3) }]);
  // The returned array is a copy.
  c.activeCalls[0].state = 'ringing';
  assert.equal(c.activeCalls[0].state, 'bridged');
});
