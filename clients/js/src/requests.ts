// Client messages that wait for the server's word: each gets its own `ref`,
// a timeout, and is answered by the server frame that echoes the ref (or
// done once written, for messages the server does not answer). Requests
// made while (re)connecting are written once connected.

import type { TelnyxErrorDetails } from './actions.js';
import { CallbridgeError } from './errors.js';
import type { GenericData } from './types.js';

/** Writes one message on a connection, in order; rejects when it could not. */
export type Write = (msg: object) => Promise<void>;

export interface RequestsHost {
  /** The client is started (not idle, not stopped). */
  started(): boolean;
  /** A writer on the connection when it is ready, else undefined (the request waits for `flush`). */
  writer(): Write | undefined;
}

export interface RequestOptions {
  /** Done once written, and no `ref` is added: the server does not answer it (`status`). */
  ackOnWrite: boolean;
  timeoutMs: number;
}

interface Pending {
  ref: string;
  msg: object;
  ackOnWrite: boolean;
  written: boolean;
  timer: unknown;
  resolve: (v: any) => void;
  reject: (e: Error) => void;
}

export class Requests {
  private readonly pending = new Map<string, Pending>();
  private count = 0;
  private readonly prefix = Math.random().toString(36).slice(2, 8);

  constructor(
    private readonly host: RequestsHost,
    private readonly timers: { set(fn: () => void, ms: number): unknown; clear(id: any): void },
  ) {}

  /**
   * Send `msg` (with a fresh `ref` unless `ackOnWrite`); resolves with the
   * answer's data, or once written. Rejects with a `CallbridgeError`.
   */
  request<T>(msg: Record<string, unknown>, o: RequestOptions): Promise<T> {
    if (!this.host.started()) {
      return Promise.reject(new CallbridgeError('not-connected', 'the client is not started'));
    }
    return new Promise<T>((resolve, reject) => {
      const ref = `${this.prefix}-${++this.count}`;
      if (!o.ackOnWrite) msg.ref = ref;
      const p: Pending = { ref, msg, ackOnWrite: o.ackOnWrite, written: false, timer: undefined, resolve, reject };
      p.timer = this.timers.set(() => this.settle(p, new CallbridgeError('timeout', `no answer within ${o.timeoutMs} ms`)), o.timeoutMs);
      this.pending.set(ref, p);
      const write = this.host.writer();
      if (write) this.write(write, p);
    });
  }

  /** A connection is ready: write what waited for one. */
  flush(write: Write): void {
    for (const p of this.pending.values()) if (!p.written) this.write(write, p);
  }

  /** The server answered the request whose ref `data.ref` names (`sent`, `call-action-result`): resolve it with `value`. */
  answer(data: GenericData, value: unknown = data): void {
    const p = typeof data.ref === 'string' ? this.pending.get(data.ref) : undefined;
    if (p) this.settle(p, undefined, value);
  }

  /** A server `error`: rejects the request it answers; false when it answers none. */
  error(data: GenericData): boolean {
    const p = typeof data.ref === 'string' ? this.pending.get(data.ref) : undefined;
    if (!p) return false;
    const telnyx = data.telnyx && typeof data.telnyx === 'object' ? (data.telnyx as TelnyxErrorDetails) : undefined;
    this.settle(p, new CallbridgeError(String(data.code), String(data.message ?? data.code), telnyx));
    return true;
  }

  /** The connection closed: what was written may or may not have arrived (`connection-lost`); the rest waits. */
  lost(): void {
    for (const p of [...this.pending.values()]) {
      if (p.written) this.settle(p, new CallbridgeError('connection-lost', 'the connection closed before the server answered'));
    }
  }

  /** The client stopped: everything fails with `not-connected`. */
  stopped(): void {
    for (const p of [...this.pending.values()]) this.settle(p, new CallbridgeError('not-connected', 'the client is stopped'));
  }

  private write(write: Write, p: Pending): void {
    p.written = true;
    write(p.msg).then(
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

  private settle(p: Pending, err: Error | undefined, value?: unknown): void {
    if (this.pending.get(p.ref) !== p) return;
    this.pending.delete(p.ref);
    this.timers.clear(p.timer);
    if (err) p.reject(err);
    else p.resolve(value);
  }
}
