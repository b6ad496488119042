// The token: getToken() one call at a time (concurrent needs share it),
// reused for a reconnect while fresh, and refreshed at about 80% of its
// lifetime as an `auth` message on the open connection (no reconnect).

import { refreshAt } from './jwt.js';
import { Timer, type Timers } from './timer.js';

/** Least time between two token refreshes. */
const MIN_REFRESH_MS = 500;

export type GetToken = () => string | null | undefined | Promise<string | null | undefined>;

/** What token refresh needs of a connection. */
export interface TokenConn {
  /** `connected` arrived. */
  ready: boolean;
  /** The token the connection authenticated with, or its latest refresh. */
  token: string;
}

export interface TokensHost<C extends TokenConn> {
  now(): number;
  /** The current connection, if any. */
  current(): C | undefined;
  /** Send `{type:'auth',token}` in order with the other messages; `conn.token` becomes `token` right after the write. */
  sendAuth(conn: C, token: string): Promise<void>;
  /** getToken returned no token: stop for good. */
  halt(reason: string): void;
}

export class Tokens<C extends TokenConn> {
  private tok: { value: string; refreshAt: number | undefined } | undefined;
  private promise: Promise<string | null | undefined> | undefined;
  /** The server refused or expired the token: the next connect fetches a new one. */
  private stale = false;
  private refreshing = false;
  private readonly timer: Timer;

  /** `retryMs`: the wait before trying a failed refresh again. */
  constructor(
    private readonly getToken: GetToken,
    private readonly host: TokensHost<C>,
    timers: Timers,
    private readonly retryMs: number,
  ) {
    this.timer = new Timer(timers);
  }

  /** The token to connect with: the current one while fresh, else a new one. */
  forConnect(): Promise<string | null | undefined> {
    const t = this.tok;
    if (t && !this.stale && (t.refreshAt === undefined || this.host.now() < t.refreshAt)) return Promise.resolve(t.value);
    return this.fetch();
  }

  /** The next connect needs a new token (after 4001, 1008, 4401). */
  invalidate(): void {
    this.stale = true;
  }

  /** getToken(), one call at a time: concurrent needs share it. */
  fetch(): Promise<string | null | undefined> {
    if (!this.promise) {
      this.promise = (async () => {
        try {
          const v = await this.getToken();
          if (typeof v === 'string' && v) {
            this.tok = { value: v, refreshAt: refreshAt(v, this.host.now()) };
            this.stale = false;
          }
          return v;
        } finally {
          this.promise = undefined;
        }
      })();
    }
    return this.promise;
  }

  /** A connection is ready: refresh when the token is due. */
  schedule(): void {
    const at = this.tok?.refreshAt;
    this.timer.stop();
    if (at !== undefined) this.timer.start(Math.max(MIN_REFRESH_MS, at - this.host.now()), () => void this.refresh());
  }

  /** A liveness tick at `now`: a refresh timer that came late (throttled, asleep) is caught up. */
  tick(now: number): void {
    if (this.tok?.refreshAt !== undefined && now >= this.tok.refreshAt) void this.refresh();
  }

  /** The connection ended, or the client stopped. */
  cancel(): void {
    this.timer.stop();
  }

  /** A new token before the current one expires, sent as `auth` on the open connection. */
  async refresh(): Promise<void> {
    const conn = this.host.current();
    if (this.refreshing || !conn?.ready) return;
    this.refreshing = true;
    try {
      const v = await this.fetch();
      if (this.host.current() !== conn) return;
      if (!v) return this.host.halt('getToken returned no token');
      // Through the send queue: every message signed after it uses the new key.
      if (v !== conn.token) await this.host.sendAuth(conn, v);
      this.schedule();
    } catch {
      // getToken failed (or the connection ended): try again shortly; the
      // server's leeway and, past it, 4001 cover the rest.
      if (this.host.current() === conn) this.timer.start(Math.max(MIN_REFRESH_MS, this.retryMs), () => void this.refresh());
    } finally {
      this.refreshing = false;
    }
  }
}
