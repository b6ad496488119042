// The connection's life: connect (token, resume point, where the token
// goes), the connect timeout, the close-code table, backoff and retries,
// the dead-connection check, `reconnectNow()`, the browser's `online`
// event, and the connection state the client reports.

import { Backoff } from './backoff.js';
import { closeAction } from './close-codes.js';
import type { Delivery } from './delivery.js';
import { Liveness, PING, type Beat } from './liveness.js';
import type { ResolvedOptions, WebSocketLike } from './options.js';
import { sendRaw, type OutConn } from './outbox.js';
import { Timer } from './timer.js';
import type { Tokens } from './tokens.js';
import type { ConnectedData, ConnectionState, GenericData, ServerFrame, StateChange, StoppedInfo } from './types.js';

/** One WebSocket connection and what the client knows about it. */
export interface Conn extends Beat, OutConn {
  ws: WebSocketLike;
  /** The token the connection authenticated with, or its latest `auth` refresh (signing key). */
  token: string;
  withSince: boolean;
  userId: string;
  signing: boolean;
  connectedAt: number;
  authSent?: boolean;
}

export interface ConnectionHost {
  /** Report a state change (the `'state'` event). */
  state(change: StateChange): void;
  /** The client stopped by itself for good (the `'stopped'` event). */
  stopped(info: StoppedInfo): void;
  /** Every frame of the current connection, parsed, before the connection acts on `connected` and `auth-required`. */
  frame(f: ServerFrame): void;
  /** `connected` arrived (the client is `connected` now). */
  connected(data: ConnectedData): void;
  /** The connection is set up after `connected`: messages may go out. */
  ready(conn: Conn): void;
  /** A connection ended (closed, dropped, timed out); with `stopping`, because the client stops. */
  ended(stopping: boolean): void;
}

const SUBPROTOCOL = 'callbridge.v1';
/** What a subprotocol name may hold (RFC 7230 tchar): a JWT does. */
const TCHARS = /^[\w!#$%&'*+.^`|~-]+$/;

const isObj = (v: unknown): v is GenericData => typeof v === 'object' && v !== null && !Array.isArray(v);

export class Connection {
  private _state: ConnectionState = 'idle';
  private conn: Conn | undefined;
  /** Bumped by every new attempt and by stop(): older async work is stale. */
  private gen = 0;
  private authRefusals = 0;
  private onlineListening = false;
  private readonly backoff: Backoff;
  private readonly liveness: Liveness<Conn>;
  private readonly retryTimer: Timer;
  private readonly connectTimer: Timer;

  constructor(
    private readonly o: ResolvedOptions,
    private readonly host: ConnectionHost,
    /** Where to resume from. */
    private readonly position: Pick<Delivery, 'loaded' | 'load' | 'since' | 'connected'>,
    private readonly tokens: Pick<Tokens<Conn>, 'forConnect' | 'invalidate' | 'schedule' | 'tick'>,
  ) {
    this.backoff = new Backoff(o.backoff, o.random);
    this.retryTimer = new Timer(o.timers);
    this.connectTimer = new Timer(o.timers);
    this.liveness = new Liveness<Conn>(
      {
        now: o.now,
        isCurrent: (c) => this.conn === c,
        ping: (c) => sendRaw(c, PING),
        dead: (c, why) => {
          this.drop(c);
          this.retry(this.backoff.delay(), undefined, why);
        },
        alive: (t) => this.tokens.tick(t),
      },
      o.timers,
      o.deadMarginMs,
    );
  }

  get state(): ConnectionState {
    return this._state;
  }

  /** Started: not idle, not stopped. */
  get started(): boolean {
    return this._state !== 'idle' && this._state !== 'stopped';
  }

  /** The current connection (maybe not `connected` yet). */
  get current(): Conn | undefined {
    return this.conn;
  }

  start(): void {
    if (this.started) return;
    this.authRefusals = 0;
    this.backoff.attempt = 0;
    this.setState({ to: 'connecting' });
    this.listenOnline(true);
    void this.connect();
  }

  stop(): void {
    if (!this.started) return;
    this.shutdown();
    this.setState({ to: 'stopped', reason: 'stop() called' });
  }

  reconnectNow(): void {
    if (!this.started) return;
    const conn = this.conn;
    if (conn) {
      this.drop(conn);
      this.retry(0, undefined, 'reconnectNow()');
    } else if (this.retryTimer.armed) {
      this.retryTimer.stop();
      void this.connect();
    }
    // Otherwise a token is being fetched for the next connection already.
  }

  /** Stop for good, by the server's word or getToken's. */
  halt(closeCode: number | undefined, reason: string): void {
    this.shutdown();
    this.setState({ to: 'stopped', closeCode, reason });
    this.host.stopped({ closeCode, reason });
  }

  // ---- connecting ---------------------------------------------------------

  private async connect(): Promise<void> {
    const gen = ++this.gen;
    let token: string | null | undefined;
    try {
      if (!this.position.loaded) await this.position.load();
      if (gen !== this.gen) return;
      token = await this.tokens.forConnect();
    } catch (e) {
      if (gen === this.gen) this.retry(this.backoff.delay(), undefined, `getToken failed: ${(e as Error)?.message ?? e}`);
      return;
    }
    if (gen !== this.gen) return;
    if (!token) return this.halt(undefined, 'getToken returned no token');
    this.open(token);
  }

  private open(token: string): void {
    // A token that is not a valid subprotocol name (not a JWT) goes in an auth message.
    const tokenIn = this.o.tokenIn === 'subprotocol' && !TCHARS.test(token) ? 'message' : this.o.tokenIn;
    const pos = this.position.since();
    const since = pos !== undefined ? `since=${pos}` : '';
    const query = [since, tokenIn === 'query' ? `token=${encodeURIComponent(token)}` : ''].filter(Boolean);
    const url = query.length ? this.o.url + (this.o.url.includes('?') ? '&' : '?') + query.join('&') : this.o.url;
    const protocols = tokenIn === 'subprotocol' ? [SUBPROTOCOL, `bearer.${token}`] : [SUBPROTOCOL];
    let ws: WebSocketLike;
    try {
      ws = new this.o.WS(url, protocols);
    } catch (e) {
      return this.retry(this.backoff.delay(), undefined, `WebSocket failed: ${(e as Error)?.message ?? e}`);
    }
    const t = this.o.now();
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
        sendRaw(conn, JSON.stringify({ type: 'auth', token }));
      }
    };
    ws.onmessage = (e: { data: unknown }) => {
      if (this.conn === conn) this.onMessage(conn, e.data);
    };
    ws.onclose = (e: { code?: number; reason?: string }) => {
      if (this.conn === conn) this.onClose(conn, e.code, e.reason);
    };
    ws.onerror = () => {
      // `close` follows.
    };
    this.connectTimer.start(this.o.connectTimeoutMs, () => {
      if (this.conn === conn && !conn.ready) {
        this.drop(conn);
        this.retry(this.backoff.delay(), undefined, 'connect timeout');
      }
    });
  }

  // ---- receiving ------------------------------------------------------------

  private onMessage(conn: Conn, raw: unknown): void {
    this.liveness.heard(conn);
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
    this.liveness.rearm(conn);
    this.host.frame(f);
    if (f.event === 'connected') this.onConnected(conn, (isObj(f.data) ? f.data : {}) as unknown as ConnectedData);
    else if (f.event === 'auth-required' && !conn.authSent) {
      // Only when the token did not come with the upgrade.
      conn.authSent = true;
      sendRaw(conn, JSON.stringify({ type: 'auth', token: conn.token }));
    }
  }

  private onConnected(conn: Conn, data: ConnectedData): void {
    const t = this.o.now();
    conn.ready = true;
    conn.userId = String(data.userId ?? '');
    conn.signing = isObj(data.signing);
    conn.heartbeatMs = (typeof data.heartbeatSecs === 'number' && data.heartbeatSecs > 0 ? data.heartbeatSecs : 25) * 1000;
    conn.connectedAt = t;
    conn.lastPingAt = t;
    this.connectTimer.stop();
    this.authRefusals = 0;
    this.position.connected(conn.withSince, data.lastSeq);
    this.setState({ to: 'connected' });
    this.host.connected(data);
    if (this.conn !== conn) return;
    this.liveness.arm(conn, conn.heartbeatMs);
    this.tokens.schedule();
    // A ping now learns the server's clock, for signing timestamps.
    if (conn.signing) sendRaw(conn, PING);
    this.host.ready(conn);
  }

  // ---- ending -----------------------------------------------------------------

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
    this.liveness.stop();
    this.connectTimer.stop();
    this.host.ended(false);
    this.backoff.ended(conn.ready ? this.o.now() - conn.connectedAt : undefined);
  }

  private onClose(conn: Conn, code: number | undefined, reason: string | undefined): void {
    this.conn = undefined;
    this.endConnection(conn);
    const why = reason || undefined;
    const action = closeAction(code);
    switch (action) {
      case 'stop':
        return this.halt(code, why ?? 'the server stopped this user');
      case 'new-token-once':
        if (this.authRefusals > 0) return this.halt(code, why ?? 'token refused');
        this.authRefusals++;
        this.tokens.invalidate();
        break;
      case 'new-token':
        this.tokens.invalidate();
        break;
    }
    this.retry(this.backoff.afterClose(action), code, why);
  }

  private retry(delay: number, closeCode: number | undefined, reason: string | undefined): void {
    this.backoff.attempt++;
    const retryInMs = Math.round(delay);
    this.setState({ to: 'reconnecting', retryInMs, closeCode, reason });
    this.retryTimer.stop();
    this.retryTimer.start(retryInMs, () => void this.connect());
  }

  private shutdown(): void {
    ++this.gen;
    this.host.ended(true);
    if (this.conn) this.drop(this.conn);
    this.retryTimer.stop();
    this.liveness.stop();
    this.connectTimer.stop();
    this.listenOnline(false);
  }

  private setState(change: Omit<StateChange, 'from'>): void {
    const from = this._state;
    this._state = change.to;
    const out: StateChange = { from, to: change.to };
    if (change.retryInMs !== undefined) out.retryInMs = change.retryInMs;
    if (change.closeCode !== undefined) out.closeCode = change.closeCode;
    if (change.reason !== undefined) out.reason = change.reason;
    this.host.state(out);
  }

  // ---- the browser's `online` event --------------------------------------------

  private readonly onOnline = () => {
    const conn = this.conn;
    if (conn?.ready) this.liveness.probe(conn);
    else if (this.retryTimer.armed) this.reconnectNow();
  };

  private listenOnline(on: boolean): void {
    const g = globalThis as { addEventListener?: (n: string, f: () => void) => void; removeEventListener?: (n: string, f: () => void) => void };
    if (!this.o.listenOnline || on === this.onlineListening || typeof g.addEventListener !== 'function') return;
    this.onlineListening = on;
    if (on) g.addEventListener('online', this.onOnline);
    else g.removeEventListener?.('online', this.onOnline);
  }
}
