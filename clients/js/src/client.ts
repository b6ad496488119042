// The reconnecting, resuming dialer client of contract §11.

import { ActiveCalls } from './calls.js';
import { closeAction } from './close-codes.js';
import { refreshAt } from './jwt.js';
import { signEnvelope } from './signing.js';
import type {
  ActiveCall,
  ConnectedData,
  ConnectionState,
  GenericData,
  Listener,
  ResumedData,
  SendRequest,
  SentData,
  ServerErrorData,
  ServerFrame,
  Snapshot,
  StateChange,
  Status,
} from './types.js';

/** The part of a WebSocket the client uses: the DOM one and `ws`'s both fit. */
export interface WebSocketLike {
  readonly readyState: number;
  // `any`: the DOM's and the ws package's event types differ; both fit.
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** `globalThis.WebSocket`, or the `ws` package's class (or a subclass of it). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Where `lastSeq` is kept between runs, so a reloaded renderer resumes. */
export interface SeqStorage {
  get(): number | undefined | null | Promise<number | undefined | null>;
  set(seq: number): void | Promise<void>;
}

/** How the token reaches the server (contract §4). */
export type TokenIn = 'subprotocol' | 'query' | 'message';

export interface BackoffOptions {
  /** First backoff ceiling; doubles per failed try. Default 500. */
  baseMs?: number;
  /** Largest backoff. Default 20000. */
  maxMs?: number;
  /** Least wait after 4008, 4029 and 1013. Default 5000. */
  floorMs?: number;
  /** After 1001 (server restarting): a random wait up to this. Default 5000. */
  restartMaxMs?: number;
  /** A connection up this long resets the backoff. Default 10000. */
  resetAfterMs?: number;
}

export interface CallbridgeClientOptions {
  /** `wss://host/ws` */
  url: string;
  /**
   * Returns a JWT. Called to connect, before the token expires (at about
   * 80% of its lifetime) and when the server refuses or expires it; one
   * call at a time. Throwing means "try again later" (with backoff);
   * returning `null`, `undefined` or `''` stops the client for good.
   */
  getToken: () => string | null | undefined | Promise<string | null | undefined>;
  /** Resume after this `seq` (from an earlier run). Wins over `storage`. */
  lastSeq?: number;
  /** Default `globalThis.WebSocket`; in Node pass the `ws` package's class. */
  WebSocket?: WebSocketConstructor;
  /** Loads `lastSeq` at `start()`, saves it after every event. */
  storage?: SeqStorage;
  /** Default `'subprotocol'` (`callbridge.v1, bearer.<JWT>`): the token stays out of URLs and logs. */
  tokenIn?: TokenIn;
  backoff?: BackoffOptions;
  /** `send()` and `setStatus()` give up after this. Default 10000. */
  sendTimeoutMs?: number;
  /** An event ahead of a hole waits this long before the client asks for a replay. Default 2000. */
  holeTimeoutMs?: number;
  /** A connection not `connected` within this is dropped and retried. Default 15000. */
  connectTimeoutMs?: number;
  /** Dead when nothing arrived for `2 × heartbeatSecs` plus this. Default 5000. */
  deadMarginMs?: number;
  /** Skip the wait when the browser's `online` event fires. Default true. */
  listenOnline?: boolean;
  /** Tests only: the wall clock (default `Date.now`). */
  now?: () => number;
  /** Tests only: timers (default the global ones). */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: any) => void;
  /** Tests only: the jitter source (default `Math.random`). */
  random?: () => number;
}

/** The Error `send()` and `setStatus()` reject with. */
export class CallbridgeError extends Error {
  /** The server's error code (`unknown-recipient`, …), or `timeout`, `not-connected`, `connection-lost`. */
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'CallbridgeError';
    this.code = code;
  }
}

interface Conn {
  ws: WebSocketLike;
  /** The token the connection authenticated with, or its latest `auth` refresh (signing key). */
  token: string;
  withSince: boolean;
  /** `connected` arrived. */
  ready: boolean;
  userId: string;
  signing: boolean;
  heartbeatMs: number;
  connectedAt: number;
  lastHeard: number;
  lastPingAt: number;
  /** Set while an `online` probe ping waits for an answer. */
  probeAt?: number;
  authSent?: boolean;
}

interface Pending {
  ref: string;
  msg: object;
  /** `setStatus`: done once written (the server does not answer it). */
  ackOnWrite: boolean;
  written: boolean;
  timer: unknown;
  resolve: (v: any) => void;
  reject: (e: Error) => void;
}

type Fn = (...args: any[]) => void;

const SUBPROTOCOL = 'callbridge.v1';
const PING = '{"type":"ping","data":{}}';
/** What a subprotocol name may hold (RFC 7230 tchar): a JWT does. */
const TCHARS = /^[\w!#$%&'*+.^`|~-]+$/;
/** An `online` probe: no answer to a ping within this means dead. */
const PROBE_MS = 3000;
/** Least time between two token refreshes. */
const MIN_REFRESH_MS = 500;
/** Names the client emits itself; a server frame of that name is not re-emitted under it. */
const OWN = new Set(['event', 'state', 'gap', 'stopped', 'calls', 'frame', 'connected', 'snapshot', 'resumed', 'error']);

const isObj = (v: unknown): v is GenericData => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `given`, with `defaults` for the keys it leaves undefined. */
function withDefaults<T extends object, D extends Partial<T>>(given: T, defaults: D): T & Required<D> {
  const out: Record<string, unknown> = { ...defaults };
  for (const [k, v] of Object.entries(given)) if (v !== undefined) out[k] = v;
  return out as T & Required<D>;
}

function report(e: unknown): void {
  // A listener's exception must not break the client; surface it like an
  // uncaught one, outside the client's own call stack.
  queueMicrotask(() => {
    throw e;
  });
}

export class CallbridgeClient {
  private readonly o: Required<Pick<CallbridgeClientOptions, 'url' | 'getToken' | 'tokenIn' | 'sendTimeoutMs' | 'holeTimeoutMs' | 'connectTimeoutMs' | 'deadMarginMs' | 'listenOnline'>> &
    CallbridgeClientOptions;
  private readonly WS: WebSocketConstructor;
  private readonly bo: Required<BackoffOptions>;
  private readonly now: () => number;
  private readonly setT: (fn: () => void, ms: number) => unknown;
  private readonly clearT: (id: any) => void;
  private readonly random: () => number;

  private readonly listeners = new Map<string, Set<Fn>>();
  private _state: ConnectionState = 'idle';
  private _lastSeq = 0;
  /** A resume point is known: connect with `since`. */
  private hasPosition = false;
  private loaded = false;
  /** Stored events that arrived ahead of a hole, by seq. */
  private readonly held = new Map<number, ServerFrame>();
  private resumeAsked = false;
  private readonly calls = new ActiveCalls();

  private conn: Conn | undefined;
  /** Bumped by every new attempt and by stop(): older async work is stale. */
  private gen = 0;
  private attempt = 0;
  private authRefusals = 0;
  private needNewToken = false;
  private tok: { value: string; refreshAt: number | undefined } | undefined;
  private tokenPromise: Promise<string | null | undefined> | undefined;
  private refreshing = false;
  /** Server clock minus local clock, from `pong` (signing timestamps). */
  private clockOffset = 0;

  private retryTimer: unknown;
  private tickTimer: unknown;
  private refreshTimer: unknown;
  private holeTimer: unknown;
  private connectTimer: unknown;

  private readonly pending = new Map<string, Pending>();
  private chain: Promise<void> = Promise.resolve();
  private refCount = 0;
  private readonly refPrefix = Math.random().toString(36).slice(2, 8);
  private onlineListening = false;

  constructor(options: CallbridgeClientOptions) {
    if (!options || typeof options.url !== 'string' || typeof options.getToken !== 'function') {
      throw new TypeError('CallbridgeClient needs { url, getToken }');
    }
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError('no WebSocket implementation: pass one, e.g. `WebSocket` from the ws package');
    }
    this.WS = WS;
    this.o = withDefaults(options, {
      tokenIn: 'subprotocol',
      sendTimeoutMs: 10_000,
      holeTimeoutMs: 2_000,
      connectTimeoutMs: 15_000,
      deadMarginMs: 5_000,
      listenOnline: true,
    });
    this.bo = withDefaults(options.backoff ?? {}, { baseMs: 500, maxMs: 20_000, floorMs: 5_000, restartMaxMs: 5_000, resetAfterMs: 10_000 });
    this.now = options.now ?? Date.now;
    this.setT = options.setTimeout ?? ((fn, ms) => setTimeout(fn, ms));
    this.clearT = options.clearTimeout ?? ((id) => clearTimeout(id));
    this.random = options.random ?? Math.random;
  }

  // ---- public API -------------------------------------------------------

  /** `'idle' | 'connecting' | 'connected' | 'reconnecting' | 'stopped'` */
  get state(): ConnectionState {
    return this._state;
  }

  /** The highest `seq` handed to `'event'` (or the resume point). */
  get lastSeq(): number {
    return this._lastSeq;
  }

  /** The user's active calls: from each snapshot, kept current by call events. */
  get activeCalls(): ActiveCall[] {
    return this.calls.list();
  }

  /** Listen; returns a function that removes the listener. */
  on<N extends string>(name: N, fn: Listener<N>): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(fn as Fn);
    return () => this.off(name, fn);
  }

  off<N extends string>(name: N, fn: Listener<N>): void {
    this.listeners.get(name)?.delete(fn as Fn);
  }

  /** Connect (and keep connecting until `stop()` or a terminal close). */
  start(): void {
    if (this._state !== 'idle' && this._state !== 'stopped') return;
    this.authRefusals = 0;
    this.attempt = 0;
    this.setState({ to: 'connecting' });
    this.listenOnline(true);
    void this.connect();
  }

  /** Close the connection and stop reconnecting. */
  stop(): void {
    if (this._state === 'idle' || this._state === 'stopped') return;
    this.shutdown();
    this.setState({ to: 'stopped', reason: 'stop() called' });
  }

  /**
   * Reconnect now: skips a pending backoff wait, or replaces the current
   * connection (after a laptop wakes up it may be dead without knowing).
   */
  reconnectNow(): void {
    if (this._state === 'idle' || this._state === 'stopped') return;
    const conn = this.conn;
    if (conn) {
      this.drop(conn);
      this.retry(0, undefined, 'reconnectNow()');
    } else if (this.retryTimer !== undefined) {
      this.clearTimer('retryTimer');
      void this.connect();
    }
    // Otherwise a token is being fetched for the next connection already.
  }

  /** Set the user's status; resolves once sent (the server does not answer it). */
  setStatus(status: Status): Promise<void> {
    return this.request({ type: 'status', status }, true);
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
    return this.request(msg, false);
  }

  // ---- connecting ---------------------------------------------------------

  private async connect(): Promise<void> {
    const gen = ++this.gen;
    this.retryTimer = undefined;
    let token: string | null | undefined;
    try {
      if (!this.loaded) await this.loadPosition();
      if (gen !== this.gen) return;
      token = await this.tokenForConnect();
    } catch (e) {
      if (gen === this.gen) this.retry(this.backoffDelay(), undefined, `getToken failed: ${(e as Error)?.message ?? e}`);
      return;
    }
    if (gen !== this.gen) return;
    if (!token) return this.halt(undefined, 'getToken returned no token');
    this.open(token);
  }

  private async loadPosition(): Promise<void> {
    this.loaded = true;
    let seq: unknown = this.o.lastSeq;
    if (seq === undefined && this.o.storage) {
      try {
        seq = await this.o.storage.get();
      } catch {
        seq = undefined;
      }
    }
    if (typeof seq === 'number' && Number.isFinite(seq) && seq > 0) {
      this._lastSeq = Math.floor(seq);
      this.hasPosition = true;
    }
  }

  private open(token: string): void {
    // A token that is not a valid subprotocol name (not a JWT) goes in an auth message.
    const tokenIn = this.o.tokenIn === 'subprotocol' && !TCHARS.test(token) ? 'message' : this.o.tokenIn;
    const since = this.hasPosition ? `since=${this._lastSeq}` : '';
    const query = [since, tokenIn === 'query' ? `token=${encodeURIComponent(token)}` : ''].filter(Boolean);
    const url = query.length ? this.o.url + (this.o.url.includes('?') ? '&' : '?') + query.join('&') : this.o.url;
    const protocols = tokenIn === 'subprotocol' ? [SUBPROTOCOL, `bearer.${token}`] : [SUBPROTOCOL];
    let ws: WebSocketLike;
    try {
      ws = new this.WS(url, protocols);
    } catch (e) {
      return this.retry(this.backoffDelay(), undefined, `WebSocket failed: ${(e as Error)?.message ?? e}`);
    }
    const t = this.now();
    const conn: Conn = {
      ws,
      token,
      withSince: !!since,
      ready: false,
      userId: '',
      signing: false,
      heartbeatMs: 25_000,
      connectedAt: t,
      lastHeard: t,
      lastPingAt: t,
    };
    this.conn = conn;
    ws.onopen = () => {
      if (this.conn === conn && tokenIn === 'message') {
        conn.authSent = true;
        this.sendRaw(conn, JSON.stringify({ type: 'auth', token }));
      }
    };
    ws.onmessage = (e: { data: unknown }) => {
      if (this.conn === conn) this.onFrame(conn, e.data);
    };
    ws.onclose = (e: { code?: number; reason?: string }) => {
      if (this.conn === conn) this.onClose(conn, e.code, e.reason);
    };
    ws.onerror = () => {
      // `close` follows.
    };
    this.timer('connectTimer', this.o.connectTimeoutMs, () => {
      if (this.conn === conn && !conn.ready) {
        this.drop(conn);
        this.retry(this.backoffDelay(), undefined, 'connect timeout');
      }
    });
  }

  /** Detach from a connection and close it. */
  private drop(conn: Conn): void {
    if (this.conn === conn) this.conn = undefined;
    this.endConnection(conn);
    const ws = conn.ws;
    // Never null: the ws package throws on an `error` nobody listens to.
    const noop = () => {};
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = noop;
    try {
      const terminate = (ws as { terminate?: () => void }).terminate;
      if (typeof terminate === 'function') terminate.call(ws);
      else ws.close(1000, 'client closing');
    } catch {
      // Already closed.
    }
  }

  /** What belongs to one connection: timers, held events, sends awaiting an answer. */
  private endConnection(conn: Conn): void {
    ++this.gen;
    for (const t of ['tickTimer', 'connectTimer', 'holeTimer', 'refreshTimer'] as const) this.clearTimer(t);
    this.held.clear();
    this.resumeAsked = false;
    for (const p of [...this.pending.values()]) {
      if (p.written) this.settle(p, new CallbridgeError('connection-lost', 'the connection closed before the server answered'));
    }
    if (conn.ready && this.now() - conn.connectedAt >= this.bo.resetAfterMs) this.attempt = 0;
  }

  private onClose(conn: Conn, code: number | undefined, reason: string | undefined): void {
    this.conn = undefined;
    this.endConnection(conn);
    const why = reason || undefined;
    switch (closeAction(code)) {
      case 'stop':
        return this.halt(code, why ?? 'the server stopped this user');
      case 'new-token-once':
        if (this.authRefusals > 0) return this.halt(code, why ?? 'token refused');
        this.authRefusals++;
        this.needNewToken = true;
        return this.retry(this.soon(), code, why);
      case 'new-token':
        this.needNewToken = true;
        return this.retry(this.soon(), code, why);
      case 'reconnect-now':
        return this.retry(this.soon(), code, why);
      case 'backoff-floor': {
        const f = this.bo.floorMs;
        return this.retry(Math.min(Math.max(this.bo.maxMs, f), f + this.random() * f * 2 ** Math.min(this.attempt, 30)), code, why);
      }
      case 'restart-jitter':
        return this.retry(this.random() * this.bo.restartMaxMs, code, why);
      default:
        return this.retry(this.backoffDelay(), code, why);
    }
  }

  /** At once, unless the last connection did not stay up (then back off). */
  private soon(): number {
    return this.attempt === 0 ? 0 : this.backoffDelay();
  }

  /** Full jitter: random in [0, min(max, base × 2^attempt)). */
  private backoffDelay(): number {
    return this.random() * Math.min(this.bo.maxMs, this.bo.baseMs * 2 ** Math.min(this.attempt, 30));
  }

  private retry(delay: number, closeCode: number | undefined, reason: string | undefined): void {
    this.attempt++;
    const retryInMs = Math.round(delay);
    this.setState({ to: 'reconnecting', retryInMs, closeCode, reason });
    this.clearTimer('retryTimer');
    this.timer('retryTimer', retryInMs, () => void this.connect());
  }

  /** Stop for good, by the server's word or getToken's. */
  private halt(closeCode: number | undefined, reason: string): void {
    this.shutdown();
    this.setState({ to: 'stopped', closeCode, reason });
    this.emit('stopped', { closeCode, reason });
  }

  private shutdown(): void {
    ++this.gen;
    for (const p of [...this.pending.values()]) this.settle(p, new CallbridgeError('not-connected', 'the client is stopped'));
    if (this.conn) this.drop(this.conn);
    for (const t of ['retryTimer', 'tickTimer', 'connectTimer', 'holeTimer', 'refreshTimer'] as const) this.clearTimer(t);
    this.listenOnline(false);
  }

  private readonly onOnline = () => {
    const conn = this.conn;
    if (conn?.ready) {
      // Maybe fine, maybe dead after a network change: ask.
      if (conn.probeAt === undefined) {
        conn.probeAt = this.now();
        this.sendRaw(conn, PING);
        this.armTick(conn, PROBE_MS);
      }
    } else if (this.retryTimer !== undefined) {
      this.reconnectNow();
    }
  };

  private listenOnline(on: boolean): void {
    const g = globalThis as { addEventListener?: (n: string, f: () => void) => void; removeEventListener?: (n: string, f: () => void) => void };
    if (!this.o.listenOnline || on === this.onlineListening || typeof g.addEventListener !== 'function') return;
    this.onlineListening = on;
    if (on) g.addEventListener('online', this.onOnline);
    else g.removeEventListener?.('online', this.onOnline);
  }

  // ---- tokens -----------------------------------------------------------------

  private tokenForConnect(): Promise<string | null | undefined> {
    const t = this.tok;
    if (t && !this.needNewToken && (t.refreshAt === undefined || this.now() < t.refreshAt)) return Promise.resolve(t.value);
    return this.fetchToken();
  }

  /** getToken(), one call at a time: concurrent needs share it. */
  private fetchToken(): Promise<string | null | undefined> {
    if (!this.tokenPromise) {
      this.tokenPromise = (async () => {
        try {
          const v = await this.o.getToken();
          if (typeof v === 'string' && v) {
            this.tok = { value: v, refreshAt: refreshAt(v, this.now()) };
            this.needNewToken = false;
          }
          return v;
        } finally {
          this.tokenPromise = undefined;
        }
      })();
    }
    return this.tokenPromise;
  }

  private scheduleRefresh(): void {
    const at = this.tok?.refreshAt;
    this.clearTimer('refreshTimer');
    if (at !== undefined) this.timer('refreshTimer', Math.max(MIN_REFRESH_MS, at - this.now()), () => void this.refreshToken());
  }

  /** A new token before the current one expires, sent as `auth` on the open connection. */
  private async refreshToken(): Promise<void> {
    const conn = this.conn;
    if (this.refreshing || !conn?.ready) return;
    this.refreshing = true;
    try {
      const v = await this.fetchToken();
      if (this.conn !== conn) return;
      if (!v) return this.halt(undefined, 'getToken returned no token');
      if (v !== conn.token) {
        // Through the send chain: every message signed after it uses the new key.
        await this.enqueue(conn, { type: 'auth', token: v }, false, () => {
          conn.token = v;
        });
      }
      this.scheduleRefresh();
    } catch {
      // getToken failed (or the connection ended): try again shortly; the
      // server's leeway and, past it, 4001 cover the rest.
      if (this.conn === conn) this.timer('refreshTimer', Math.max(MIN_REFRESH_MS, this.bo.baseMs * 4), () => void this.refreshToken());
    } finally {
      this.refreshing = false;
    }
  }

  // ---- receiving --------------------------------------------------------------

  private onFrame(conn: Conn, raw: unknown): void {
    conn.lastHeard = this.now();
    conn.probeAt = undefined;
    if (typeof raw !== 'string') return;
    let f: ServerFrame;
    try {
      f = JSON.parse(raw);
    } catch {
      return;
    }
    if (!isObj(f) || typeof f.event !== 'string') return;
    // Re-armed from the network event rather than chained from the last
    // tick: browsers throttle chained timers of hidden tabs hardest.
    if (conn.ready) this.armTick(conn, conn.lastPingAt + conn.heartbeatMs - conn.lastHeard);
    this.emit('frame', f);
    const data = (isObj(f.data) ? f.data : {}) as any;
    switch (f.event) {
      case 'connected':
        return this.onConnected(conn, data as ConnectedData);
      case 'auth-required':
        // Only when the token did not come with the upgrade.
        if (!conn.authSent) {
          conn.authSent = true;
          this.sendRaw(conn, JSON.stringify({ type: 'auth', token: conn.token }));
        }
        return;
      case 'pong':
        if (typeof data.timestamp === 'number') this.clockOffset = data.timestamp - Date.now();
        return;
      case 'snapshot':
        this.calls.reset(Array.isArray(data.activeCalls) ? data.activeCalls : []);
        this.emit('snapshot', data as Snapshot);
        this.emit('calls', this.calls.list());
        return;
      case 'resumed':
        return this.onResumed(conn, data as ResumedData);
      case 'sent':
        return this.answer(data, undefined);
      case 'error':
        if (typeof data.ref === 'string' && this.pending.has(data.ref)) {
          return this.answer(data, new CallbridgeError(String(data.code), String(data.message ?? data.code)));
        }
        this.emit('error', data as ServerErrorData);
        return;
    }
    if (typeof f.seq === 'number') return this.onStored(conn, f);
    if (!OWN.has(f.event)) this.emit(f.event, data, f);
  }

  private onConnected(conn: Conn, data: ConnectedData): void {
    const t = this.now();
    conn.ready = true;
    conn.userId = String(data.userId ?? '');
    conn.signing = isObj(data.signing);
    conn.heartbeatMs = (typeof data.heartbeatSecs === 'number' && data.heartbeatSecs > 0 ? data.heartbeatSecs : 25) * 1000;
    conn.connectedAt = t;
    conn.lastPingAt = t;
    this.clearTimer('connectTimer');
    this.authRefusals = 0;
    if (!conn.withSince) {
      // A fresh start: the server sends what is stored after its lastSeq.
      const seq = typeof data.lastSeq === 'number' ? data.lastSeq : 0;
      if (seq !== this._lastSeq) this.setLastSeq(seq);
    }
    this.hasPosition = true;
    this.setState({ to: 'connected' });
    this.emit('connected', data);
    if (this.conn !== conn) return;
    this.armTick(conn, conn.heartbeatMs);
    this.scheduleRefresh();
    // A ping now learns the server's clock, for signing timestamps.
    if (conn.signing) this.sendRaw(conn, PING);
    for (const p of this.pending.values()) if (!p.written) this.write(conn, p);
  }

  private onStored(conn: Conn, f: ServerFrame): void {
    const seq = f.seq!;
    if (!Number.isInteger(seq) || seq <= this._lastSeq) return;
    if (seq > this._lastSeq + 1) {
      this.held.set(seq, f);
      if (this.holeTimer === undefined && !this.resumeAsked) this.timer('holeTimer', this.o.holeTimeoutMs, () => this.askResume());
      return;
    }
    this.deliver(f);
    // A listener may have stopped the client (which clears `held`).
    for (let next = this.held.get(this._lastSeq + 1); next && this.conn === conn; next = this.held.get(this._lastSeq + 1)) {
      this.held.delete(next.seq!);
      this.deliver(next);
    }
    for (const s of this.held.keys()) if (s <= this._lastSeq) this.held.delete(s);
    if (this.held.size === 0) {
      this.clearTimer('holeTimer');
      this.resumeAsked = false;
    }
  }

  /** The hole did not fill by itself: ask for a replay after lastSeq. */
  private askResume(): void {
    this.holeTimer = undefined;
    const conn = this.conn;
    if (!conn?.ready || this.held.size === 0) return;
    this.resumeAsked = true;
    this.enqueue(conn, { type: 'resume', since: this._lastSeq }, true).catch(() => {});
  }

  private onResumed(conn: Conn, data: ResumedData): void {
    this.emit('resumed', data);
    if ((!data.gap && this.held.size === 0) || this.conn !== conn) return;
    // History no longer reaches back (or, never expected, the replay left
    // a hole): say so, then accept what came and move on from there.
    const held = [...this.held.values()].sort((a, b) => a.seq! - b.seq!);
    this.held.clear();
    this.clearTimer('holeTimer');
    this.resumeAsked = false;
    const mine = this._lastSeq;
    const serverTo = typeof data.to === 'number' ? data.to : mine;
    // Continue right before the first event that came, else from the
    // server's last seq (lower than ours when its history was lost).
    const next = held.length ? held[0]!.seq! - 1 : serverTo;
    this.setLastSeq(next);
    this.emit('gap', data.gap ? { from: typeof data.from === 'number' ? data.from : mine, to: serverTo } : { from: mine, to: next });
    for (const f of held) {
      if (this.conn !== conn) return;
      this.deliver(f);
    }
  }

  private deliver(f: ServerFrame): void {
    const ev = f as ServerFrame<GenericData> & { seq: number };
    const data = (isObj(ev.data) ? ev.data : {}) as GenericData;
    this._lastSeq = ev.seq;
    const changed = this.calls.apply(ev.event, data, ev.ts);
    this.emit('event', ev);
    if (!OWN.has(ev.event)) this.emit(ev.event, data, ev);
    if (changed) this.emit('calls', this.calls.list());
    this.persist();
  }

  private setLastSeq(seq: number): void {
    this._lastSeq = seq;
    this.persist();
  }

  private persist(): void {
    const s = this.o.storage;
    if (!s) return;
    try {
      const r = s.set(this._lastSeq);
      if (r && typeof (r as Promise<void>).catch === 'function') (r as Promise<void>).catch(() => {});
    } catch {
      // A full or unavailable storage costs a longer replay, nothing more.
    }
  }

  // ---- liveness -----------------------------------------------------------------

  private armTick(conn: Conn, ms: number): void {
    this.clearTimer('tickTimer');
    this.timer('tickTimer', Math.max(10, ms), () => this.tick(conn));
  }

  /**
   * Each tick compares wall-clock times, so a tick that comes late (a
   * throttled background tab, a laptop that slept) still sees the silence.
   */
  private tick(conn: Conn): void {
    if (this.conn !== conn || !conn.ready) return;
    const t = this.now();
    const hb = conn.heartbeatMs;
    const deadAfter = 2 * hb + this.o.deadMarginMs;
    const silent = t - conn.lastHeard;
    const probing = conn.probeAt !== undefined && t - conn.probeAt >= PROBE_MS;
    if (silent > deadAfter || probing) {
      this.drop(conn);
      const why = probing ? 'no answer to a ping after going online' : `nothing received for ${Math.round(silent / 1000)} s`;
      return this.retry(this.backoffDelay(), undefined, why);
    }
    if (this.tok?.refreshAt !== undefined && t >= this.tok.refreshAt) void this.refreshToken();
    if (t - conn.lastPingAt >= hb) {
      conn.lastPingAt = t;
      this.sendRaw(conn, PING);
    }
    let next = Math.min(conn.lastPingAt + hb - t, deadAfter - silent + 1);
    if (conn.probeAt !== undefined) next = Math.min(next, conn.probeAt + PROBE_MS - t);
    this.armTick(conn, next);
  }

  // ---- sending ------------------------------------------------------------------

  private sendRaw(conn: Conn, text: string): void {
    try {
      conn.ws.send(text);
    } catch {
      // Not open (any more): the close handler takes it from here.
    }
  }

  /**
   * Send a client message in order with the others; signed (§9) when the
   * server asks and `sign` is set. `after` runs right after the write.
   */
  private enqueue(conn: Conn, msg: object, sign: boolean, after?: () => void): Promise<void> {
    const run = async () => {
      const lost = () => new CallbridgeError('connection-lost', 'the connection closed');
      if (this.conn !== conn) throw lost();
      let text = JSON.stringify(msg);
      if (sign && conn.signing) {
        text = JSON.stringify(await signEnvelope(text, conn.token, conn.userId, Date.now() + this.clockOffset));
        if (this.conn !== conn) throw lost();
      }
      conn.ws.send(text);
      after?.();
    };
    const p = this.chain.then(run);
    this.chain = p.catch(() => {});
    return p;
  }

  private request<T>(msg: Record<string, unknown>, ackOnWrite: boolean): Promise<T> {
    if (this._state === 'idle' || this._state === 'stopped') {
      return Promise.reject(new CallbridgeError('not-connected', 'the client is not started'));
    }
    return new Promise<T>((resolve, reject) => {
      const ref = `${this.refPrefix}-${++this.refCount}`;
      if (!ackOnWrite) msg.ref = ref;
      const p: Pending = { ref, msg, ackOnWrite, written: false, timer: undefined, resolve, reject };
      p.timer = this.setT(() => this.settle(p, new CallbridgeError('timeout', `no answer within ${this.o.sendTimeoutMs} ms`)), this.o.sendTimeoutMs);
      this.pending.set(ref, p);
      if (this.conn?.ready) this.write(this.conn, p);
    });
  }

  private write(conn: Conn, p: Pending): void {
    p.written = true;
    this.enqueue(conn, p.msg, true).then(
      () => {
        if (p.ackOnWrite) this.settle(p, undefined);
      },
      (e: unknown) =>
        this.settle(
          p,
          e instanceof CallbridgeError ? e : new CallbridgeError((e as { code?: string })?.code ?? 'send-failed', String((e as Error)?.message ?? e)),
        ),
    );
  }

  private answer(data: GenericData, err: Error | undefined): void {
    const p = typeof data.ref === 'string' ? this.pending.get(data.ref) : undefined;
    if (p) this.settle(p, err, data);
  }

  private settle(p: Pending, err: Error | undefined, value?: unknown): void {
    if (this.pending.get(p.ref) !== p) return;
    this.pending.delete(p.ref);
    this.clearT(p.timer);
    if (err) p.reject(err);
    else p.resolve(value);
  }

  // ---- plumbing -------------------------------------------------------------------

  private setState(change: Omit<StateChange, 'from'>): void {
    const from = this._state;
    this._state = change.to;
    const out: StateChange = { from, to: change.to };
    if (change.retryInMs !== undefined) out.retryInMs = change.retryInMs;
    if (change.closeCode !== undefined) out.closeCode = change.closeCode;
    if (change.reason !== undefined) out.reason = change.reason;
    this.emit('state', out);
  }

  private emit(name: string, ...args: unknown[]): void {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        report(e);
      }
    }
  }

  private timer(name: 'retryTimer' | 'tickTimer' | 'refreshTimer' | 'holeTimer' | 'connectTimer', ms: number, fn: () => void): void {
    this[name] = this.setT(() => {
      this[name] = undefined;
      fn();
    }, ms);
  }

  private clearTimer(name: 'retryTimer' | 'tickTimer' | 'refreshTimer' | 'holeTimer' | 'connectTimer'): void {
    if (this[name] !== undefined) {
      this.clearT(this[name]);
      this[name] = undefined;
    }
  }
}
