// The client's options (public types) and their defaults.

import type { Timers } from './timer.js';

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
  /** `send()`, `setStatus()` and `signal()` give up after this. Default 10000. */
  sendTimeoutMs?: number;
  /**
   * `callAction()` and `dial()` give up after this. Default 20000: longer
   * than the server's own 15 s bound on Telnyx's answer.
   */
  actionTimeoutMs?: number;
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

/** The options with every default filled in: what the modules read. */
export interface ResolvedOptions {
  url: string;
  getToken: CallbridgeClientOptions['getToken'];
  WS: WebSocketConstructor;
  lastSeq: number | undefined;
  storage: SeqStorage | undefined;
  tokenIn: TokenIn;
  backoff: Required<BackoffOptions>;
  sendTimeoutMs: number;
  actionTimeoutMs: number;
  holeTimeoutMs: number;
  connectTimeoutMs: number;
  deadMarginMs: number;
  listenOnline: boolean;
  now: () => number;
  timers: Timers;
  random: () => number;
}

/** `given`, with `defaults` for the keys it leaves undefined. */
function withDefaults<T extends object, D extends Partial<T>>(given: T, defaults: D): T & Required<D> {
  const out: Record<string, unknown> = { ...defaults };
  for (const [k, v] of Object.entries(given)) if (v !== undefined) out[k] = v;
  return out as T & Required<D>;
}

/** Check the options and fill in the defaults; throws a `TypeError` on what cannot work. */
export function resolveOptions(options: CallbridgeClientOptions): ResolvedOptions {
  if (!options || typeof options.url !== 'string' || typeof options.getToken !== 'function') {
    throw new TypeError('CallbridgeClient needs { url, getToken }');
  }
  const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!WS) {
    throw new TypeError('no WebSocket implementation: pass one, e.g. `WebSocket` from the ws package');
  }
  const o = withDefaults(options, {
    tokenIn: 'subprotocol',
    sendTimeoutMs: 10_000,
    actionTimeoutMs: 20_000,
    holeTimeoutMs: 2_000,
    connectTimeoutMs: 15_000,
    deadMarginMs: 5_000,
    listenOnline: true,
  });
  return {
    ...o,
    WS,
    backoff: withDefaults(options.backoff ?? {}, { baseMs: 500, maxMs: 20_000, floorMs: 5_000, restartMaxMs: 5_000, resetAfterMs: 10_000 }),
    now: options.now ?? Date.now,
    timers: {
      set: options.setTimeout ?? ((fn, ms) => setTimeout(fn, ms)),
      clear: options.clearTimeout ?? ((id) => clearTimeout(id)),
    },
    random: options.random ?? Math.random,
  };
}
