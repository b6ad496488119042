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
  type CallbridgeEvent,
  type CallHangupData,
  type CloseAction,
  type ConnectionState,
  type SentData,
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
const action: CloseAction | undefined = CLOSE_CODE_ACTIONS[4003];
void [seq, calls, state, status, useSent, action];
