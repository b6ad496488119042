// The reconnecting, resuming dialer client of contracts §11 and §14: the public
// facade. Each concern lives in its own module; this class wires them and
// routes the server's frames:
//
// - connection.ts  the connection's life: connect, close codes, backoff
//                  (backoff.ts), the dead-connection check (liveness.ts)
// - tokens.ts      getToken() one at a time, refresh as `auth`
// - delivery.ts    exactly once, in order: lastSeq, held events, resume, gap
// - requests.ts    messages awaiting an answer: refs, timeouts, settling
// - outbox.ts      ordered (and §9-signed) writes
// - emitter.ts     listeners

import { ActiveCalls } from './calls.js';
import { Connection, type Conn } from './connection.js';
import { Delivery, type StoredFrame } from './delivery.js';
import { Emitter, type Fn } from './emitter.js';
import { resolveOptions, type CallbridgeClientOptions } from './options.js';
import { Outbox } from './outbox.js';
import { Requests } from './requests.js';
import { Tokens } from './tokens.js';
import type { CallActionArgs, CallActionName, CallActionResult, DialParams, DialResult } from './actions.js';
import type { ActiveCall, ConnectionState, GenericData, Listener, SendRequest, SentData, ServerFrame, SignalTarget, Status } from './types.js';

export { CallbridgeError } from './errors.js';
export type { BackoffOptions, CallbridgeClientOptions, SeqStorage, TokenIn, WebSocketConstructor, WebSocketLike } from './options.js';

/** Names the client emits itself; a server frame of that name is not re-emitted under it. */
const OWN = new Set(['event', 'state', 'gap', 'stopped', 'calls', 'frame', 'connected', 'snapshot', 'resumed', 'error', 'signal']);

const isObj = (v: unknown): v is GenericData => typeof v === 'object' && v !== null && !Array.isArray(v);

export class CallbridgeClient {
  private readonly events = new Emitter();
  private readonly calls = new ActiveCalls();
  private readonly link: Connection;
  private readonly delivery: Delivery;
  // Not `tokens`: the unit tests' helper sets `c.tokens` on the client.
  private readonly auth: Tokens<Conn>;
  private readonly requests: Requests;
  private readonly outbox: Outbox<Conn>;
  private readonly sendTimeoutMs: number;
  private readonly actionTimeoutMs: number;

  constructor(options: CallbridgeClientOptions) {
    const o = resolveOptions(options);
    this.sendTimeoutMs = o.sendTimeoutMs;
    this.actionTimeoutMs = o.actionTimeoutMs;
    const emit = this.emit.bind(this);
    const current = () => this.link.current;
    this.outbox = new Outbox<Conn>(current);
    this.delivery = new Delivery(
      {
        deliver: (f) => this.deliver(f),
        resumed: (data) => emit('resumed', data),
        gap: (info) => emit('gap', info),
        resume: (since) => {
          const conn = this.link.current;
          if (!conn?.ready) return false;
          this.outbox.enqueue(conn, { type: 'resume', since }, true).catch(() => {});
          return true;
        },
      },
      o,
      o.timers,
    );
    this.auth = new Tokens<Conn>(
      o.getToken,
      {
        now: o.now,
        current,
        sendAuth: (conn, token) =>
          this.outbox.enqueue(conn, { type: 'auth', token }, false, () => {
            conn.token = token;
          }),
        halt: (reason) => this.link.halt(undefined, reason),
      },
      o.timers,
      o.backoff.baseMs * 4,
    );
    this.requests = new Requests(
      {
        started: () => this.link.started,
        writer: () => {
          const conn = this.link.current;
          return conn?.ready ? (msg) => this.outbox.enqueue(conn, msg, true) : undefined;
        },
      },
      o.timers,
    );
    this.link = new Connection(
      o,
      {
        state: (change) => emit('state', change),
        stopped: (info) => emit('stopped', info),
        frame: (f) => this.onFrame(f),
        connected: (data) => emit('connected', data),
        ready: (conn) => this.requests.flush((msg) => this.outbox.enqueue(conn, msg, true)),
        ended: (stopping) => {
          if (stopping) this.requests.stopped();
          else this.requests.lost();
          this.delivery.reset();
          this.auth.cancel();
        },
      },
      this.delivery,
      this.auth,
    );
  }

  // ---- public API -------------------------------------------------------

  /** `'idle' | 'connecting' | 'connected' | 'reconnecting' | 'stopped'` */
  get state(): ConnectionState {
    return this.link.state;
  }

  /** The highest `seq` handed to `'event'` (or the resume point). */
  get lastSeq(): number {
    return this.delivery.lastSeq;
  }

  /** The user's active calls: from each snapshot, kept current by call events. */
  get activeCalls(): ActiveCall[] {
    return this.calls.list();
  }

  /** Listen; returns a function that removes the listener. */
  on<N extends string>(name: N, fn: Listener<N>): () => void {
    return this.events.on(name, fn as Fn);
  }

  off<N extends string>(name: N, fn: Listener<N>): void {
    this.events.off(name, fn as Fn);
  }

  /** Connect (and keep connecting until `stop()` or a terminal close). */
  start(): void {
    this.link.start();
  }

  /** Close the connection and stop reconnecting. */
  stop(): void {
    this.link.stop();
  }

  /**
   * Reconnect now: skips a pending backoff wait, or replaces the current
   * connection (after a laptop wakes up it may be dead without knowing).
   */
  reconnectNow(): void {
    this.link.reconnectNow();
  }

  /** Set the user's status; resolves once sent (the server does not answer it). */
  setStatus(status: Status): Promise<void> {
    return this.requests.request({ type: 'status', status }, { ackOnWrite: true, timeoutMs: this.sendTimeoutMs });
  }

  /**
   * Send a message to a user (`{ to, payload }`) or to everyone on a call
   * (`{ call, payload }`), contract §8. Resolves with the `sent` data;
   * rejects with a `CallbridgeError` whose `code` is the server's error
   * code, or `timeout`, `not-connected`, `connection-lost`.
   */
  send<P = unknown>(req: SendRequest<P>): Promise<SentData> {
    const msg: Record<string, unknown> = { type: 'send' };
    if (req && req.to !== undefined) msg.to = req.to;
    if (req && req.call !== undefined) msg.call = req.call;
    msg.payload = req?.payload;
    return this.requests.request(msg, { ackOnWrite: false, timeoutMs: this.sendTimeoutMs });
  }

  /**
   * Act on a call (contract §14): `action` on the call whose
   * `callControlId` is `call`, with Telnyx's own (snake_case) `params`.
   * Resolves with Telnyx's answer (`call-action-result`'s `data.result`,
   * usually `{ result: 'ok' }`); rejects with a `CallbridgeError` whose
   * `code` is the server's (`actions-disabled`, `action-not-allowed`,
   * `not-on-call`, `bad-request`, `telnyx-rejected` with `err.telnyx`,
   * `telnyx-unavailable`, …), or `timeout` (after `actionTimeoutMs`,
   * 20 s), `not-connected`, `connection-lost`.
   */
  callAction<A extends CallActionName>(action: A, call: string, ...[params]: CallActionArgs<A>): Promise<CallActionResult> {
    return this.action({ type: 'call-action', action, call, params: params ?? {} });
  }

  /**
   * Place an outbound call (`call-action` `dial`, §14) to `to` (E.164 or a
   * SIP URI); the server binds it to this user, so its events come here.
   * Resolves with Telnyx's new call (`call_control_id`, `call_session_id`,
   * …); rejects as `callAction()` does (`dial-not-configured` too).
   */
  dial(to: string, params?: DialParams): Promise<DialResult> {
    return this.action({ type: 'call-action', action: 'dial', params: { to, ...params } });
  }

  /**
   * Send a signal (§14: not stored, not replayed; e.g. `'typing'`) to a
   * user (`{ to }`) or to everyone on a call (`{ call }`). Fire and forget:
   * resolves once written; the server answers only a refusal, which arrives
   * as an `'error'` event. Rejects with `not-connected`, or `timeout` when
   * no connection came up within `sendTimeoutMs`.
   */
  signal(target: SignalTarget, name: string, data: unknown = {}): Promise<void> {
    const msg: Record<string, unknown> = { type: 'signal' };
    if (target && target.to !== undefined) msg.to = target.to;
    if (target && target.call !== undefined) msg.call = target.call;
    msg.name = name;
    msg.data = data;
    return this.requests.request(msg, { ackOnWrite: true, timeoutMs: this.sendTimeoutMs });
  }

  private action<T>(msg: Record<string, unknown>): Promise<T> {
    return this.requests.request(msg, { ackOnWrite: false, timeoutMs: this.actionTimeoutMs });
  }

  // ---- routing the server's frames ----------------------------------------

  private onFrame(f: ServerFrame): void {
    this.emit('frame', f);
    const data = (isObj(f.data) ? f.data : {}) as any;
    switch (f.event) {
      case 'connected':
      case 'auth-required':
        return; // the connection's own
      case 'pong':
        if (typeof data.timestamp === 'number') this.outbox.pong(data.timestamp);
        return;
      case 'snapshot':
        this.calls.reset(Array.isArray(data.activeCalls) ? data.activeCalls : []);
        this.emit('snapshot', data);
        this.emit('calls', this.calls.list());
        return;
      case 'resumed':
        return this.delivery.resumed(data);
      case 'sent':
        return this.requests.answer(data);
      case 'call-action-result':
        return this.requests.answer(data, data.result);
      case 'signal':
        // Not stored: no seq, not counted, never held for order.
        if (typeof f.seq !== 'number') return this.emit('signal', data);
        break;
      case 'error':
        if (!this.requests.error(data)) this.emit('error', data);
        return;
    }
    if (typeof f.seq === 'number') return this.delivery.stored(f as StoredFrame);
    if (!OWN.has(f.event)) this.emit(f.event, data, f);
  }

  /** One stored event, in order: active calls, then `'event'`, its own name, `'calls'`. */
  private deliver(ev: StoredFrame): void {
    const data = (isObj(ev.data) ? ev.data : {}) as GenericData;
    const changed = this.calls.apply(ev.event, data, ev.ts);
    this.emit('event', ev);
    if (!OWN.has(ev.event)) this.emit(ev.event, data, ev);
    if (changed) this.emit('calls', this.calls.list());
  }

  private emit(name: string, ...args: unknown[]): void {
    this.events.emit(name, ...args);
  }
}
