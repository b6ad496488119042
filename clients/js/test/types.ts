// Type-level tests, checked by `tsc --noEmit -p test` (part of `npm test`):
// the public API type-checks as contract §11 shows it, and wrong uses do not.

import WS from 'ws';

import {
  CallbridgeClient,
  CallbridgeError,
  CLOSE_CODE_ACTIONS,
  isEvent,
  webStorage,
  type ActiveCall,
  type CallActionName,
  type CallActionResult,
  type CallbridgeEvent,
  type CallHangupData,
  type CloseAction,
  type ConnectionState,
  type DialResult,
  type SentData,
  type SignalData,
  type TelnyxErrorDetails,
  type StateChange,
} from '../dist/index.js';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const assertType = <T extends true>(_?: T) => {};

// Node: the ws package's class; browsers: the global one.
const client = new CallbridgeClient({ url: 'wss://x/ws', getToken: async () => 'jwt', WebSocket: WS });
new CallbridgeClient({ url: 'wss://x/ws', getToken: () => 'jwt', WebSocket: globalThis.WebSocket, lastSeq: 3, storage: webStorage('k') });
class TrustingWS extends WS {
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols, { rejectUnauthorized: false });
  }
}
new CallbridgeClient({ url: 'wss://x/ws', getToken: () => null, WebSocket: TrustingWS, tokenIn: 'query', backoff: { baseMs: 1 } });
// @ts-expect-error getToken is required
new CallbridgeClient({ url: 'wss://x/ws' });
// @ts-expect-error no such tokenIn
new CallbridgeClient({ url: 'wss://x/ws', getToken: () => 't', tokenIn: 'header' });

// The example.
client.on('call-hangup', (d) => d.hangupCause);
client.on('call-hangup', (d, ev) => {
  assertType<Equal<typeof d, CallHangupData>>();
  assertType<Equal<typeof d.hangupCause, string | undefined>>();
  assertType<Equal<typeof d.durationSecs, number | undefined>>();
  assertType<Equal<typeof ev.event, 'call-hangup'>>();
  assertType<Equal<typeof ev.seq, number>>();
});
client.on('call-initiated', (d) => d.callerIdName?.toUpperCase());
client.on('dtmf-received', (d) => d.digit);
client.on('call-recording-saved', (d) => d.recordingUrls?.mp3);
client.on('call-machine-detection-ended', (d) => d.result);
client.on('call-machine-greeting-ended', (d) => d.result);
client.on('call-gather-ended', (d) => [d.digits, d.status]);
client.on('call-answered', (d) => d.startTime);
client.on('call-bridged', (d) => d.callControlId);
client.on('message', (d) => {
  assertType<Equal<typeof d.to, string | null>>();
  return [d.from, d.call, d.payload, d.ref];
});
// @ts-expect-error dtmf-received has no hangupCause
client.on('dtmf-received', (d) => d.hangupCause);
// @ts-expect-error a state change has no nope
client.on('state', (s) => s.nope);

const off: () => void = client.on('event', (ev) => {
  assertType<Equal<typeof ev, CallbridgeEvent>>();
  const seq: number = ev.seq;
  switch (ev.event) {
    case 'call-hangup':
      break;
  }
  if (isEvent(ev, 'call-hangup')) {
    assertType<Equal<typeof ev.data.hangupCause, string | undefined>>();
  }
  if (isEvent(ev, 'message')) ev.data.payload;
  return seq;
});
off();
client.on('state', ({ from, to, retryInMs, closeCode, reason }: StateChange) => {
  assertType<Equal<typeof from, ConnectionState>>();
  assertType<Equal<typeof to, 'connecting' | 'connected' | 'reconnecting' | 'stopped'>>();
  return [retryInMs, closeCode, reason];
});
client.on('snapshot', (snap) => snap.activeCalls.map((c) => c.state));
client.on('gap', ({ from, to }) => from + to);
client.on('stopped', ({ closeCode, reason }) => [closeCode, reason]);
client.on('connected', (d) => [d.userId, d.heartbeatSecs, d.signing?.required]);
client.on('calls', (calls: ActiveCall[]) => calls.length);
// A custom /api/broadcast event: generic data.
client.on('shift-change', (data, frame) => [data.team, frame.event]);
client.off('state', () => {});

client.start();
client.stop();
client.reconnectNow();
const seq: number = client.lastSeq;
const calls: ActiveCall[] = client.activeCalls;
const state: ConnectionState = client.state;
const status: Promise<void> = client.setStatus('away');
// @ts-expect-error not a status
client.setStatus('gone');
const sent: Promise<SentData> = client.send({ to: 'u2', payload: { text: 'hi' } });
client.send({ call: 'v3:abc', payload: 1 });
// @ts-expect-error a target is required
client.send({ payload: 1 });
async function useSent() {
  const s = await sent;
  const id: string = s.id;
  const recipients: string[] = s.recipients;
  try {
    await client.send({ to: 'u2', payload: 1 });
  } catch (e) {
    if (e instanceof CallbridgeError) e.code.toUpperCase();
  }
  return [id, recipients];
}
// §14: call actions, typed by name, with Telnyx's snake_case params.
const dtmf: Promise<CallActionResult> = client.callAction('send_dtmf', 'v3:cc', { digits: '1' });
// @ts-expect-error send_dtmf needs digits
client.callAction('send_dtmf', 'v3:cc', {});
// @ts-expect-error send_dtmf needs its params
client.callAction('send_dtmf', 'v3:cc');
// @ts-expect-error digits is a string
client.callAction('send_dtmf', 'v3:cc', { digits: 1 });
client.callAction('answer', 'v3:cc');
client.callAction('answer', 'v3:cc', { record: 'record-from-answer', record_format: 'mp3', webhook_url: 'https://x' });
client.callAction('hangup', 'v3:cc');
client.callAction('reject', 'v3:cc', { cause: 'USER_BUSY' });
// @ts-expect-error not a cause Telnyx knows
client.callAction('reject', 'v3:cc', { cause: 'NOPE' });
// @ts-expect-error reject needs a cause
client.callAction('reject', 'v3:cc');
client.callAction('transfer', 'v3:cc', { to: '+15550001111', from: '+15559990000', timeout_secs: 30 });
// @ts-expect-error transfer needs to
client.callAction('transfer', 'v3:cc', { from: '+15559990000' });
client.callAction('bridge', 'v3:cc', { call_control_id: 'v3:other' });
client.callAction('speak', 'v3:cc', { payload: 'Hello', voice: 'female', language: 'en-US' });
// @ts-expect-error speak needs a voice
client.callAction('speak', 'v3:cc', { payload: 'Hello' });
client.callAction('playback_start', 'v3:cc', { audio_url: 'https://x/a.mp3', loop: 'infinity' });
client.callAction('playback_stop', 'v3:cc');
client.callAction('record_start', 'v3:cc', { channels: 'dual', format: 'mp3' });
// @ts-expect-error record_start needs channels and format
client.callAction('record_start', 'v3:cc', { format: 'mp3' });
client.callAction('record_pause', 'v3:cc');
client.callAction('record_resume', 'v3:cc', { recording_id: 'r1' });
client.callAction('record_stop', 'v3:cc');
client.callAction('enqueue', 'v3:cc', { queue_name: 'support', max_wait_time_secs: 60 });
client.callAction('leave_queue', 'v3:cc');
// Fields not typed here pass through (the escape hatch).
client.callAction('send_dtmf', 'v3:cc', { digits: '1', some_new_telnyx_field: true });
// @ts-expect-error dial has dial()
client.callAction('dial', 'v3:cc', { to: '+1' });
// @ts-expect-error not an action
client.callAction('explode', 'v3:cc');
assertType<Equal<CallActionName, 'answer' | 'hangup' | 'reject' | 'transfer' | 'bridge' | 'send_dtmf' | 'speak' | 'playback_start' | 'playback_stop' | 'record_start' | 'record_stop' | 'record_pause' | 'record_resume' | 'enqueue' | 'leave_queue'>>();
const dialled: Promise<DialResult> = client.dial('+15550001111', { from: '+15559990000', timeout_secs: 30 });
client.dial('sip:bob@example.com');
// @ts-expect-error to is dial's first argument
client.dial('+1', { to: '+2' });
async function useActions() {
  const call = await dialled;
  const ids: string[] = [call.call_control_id, call.call_leg_id, call.call_session_id];
  try {
    await client.callAction('hangup', call.call_control_id);
  } catch (e) {
    if (e instanceof CallbridgeError && e.code === 'telnyx-rejected') {
      const t: TelnyxErrorDetails | undefined = e.telnyx;
      return [t?.status, t?.errors[0]?.detail];
    }
  }
  return ids;
}
// Signals: out to a user or a call, in as 'signal'.
const signalled: Promise<void> = client.signal({ to: 'u2' }, 'typing', { on: true });
client.signal({ call: 'v3:cc' }, 'typing', null);
client.signal({ to: 'u2' }, 'typing');
// @ts-expect-error a target is required
client.signal({}, 'typing', {});
// @ts-expect-error not both
client.signal({ to: 'u2', call: 'v3:cc' }, 'typing', {});
client.on('signal', (d) => {
  assertType<Equal<typeof d, SignalData>>();
  const from: string = d.from;
  return [from, d.name, d.data, d.to, d.call];
});
new CallbridgeClient({ url: 'wss://x/ws', getToken: () => 't', WebSocket: WS, actionTimeoutMs: 30_000 });
void [dtmf, useActions, signalled];

const action: CloseAction | undefined = CLOSE_CODE_ACTIONS[4003];
void [seq, calls, state, status, useSent, action];
