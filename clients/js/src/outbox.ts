// Client messages go out one after another, in the order they were
// asked for, signed (contract §9) when the server asks for signatures.

import { CallbridgeError } from './errors.js';
import { signEnvelope } from './signing.js';

/** What the outbox needs of a connection. */
export interface OutConn {
  ws: { send(data: string): void };
  /** The signing key's token: the one the connection authenticated with, or its latest `auth` refresh. */
  token: string;
  userId: string;
  /** `connected.data.signing` was set. */
  signing: boolean;
}

/** Write now, outside the queue (`ping`, the first `auth`); a closed socket is the close handler's business. */
export function sendRaw(conn: OutConn, text: string): void {
  try {
    conn.ws.send(text);
  } catch {
    // Not open (any more): the close handler takes it from here.
  }
}

export class Outbox<C extends OutConn> {
  private chain: Promise<void> = Promise.resolve();
  /** Server clock minus local clock, from `pong` (signing timestamps). */
  private clockOffset = 0;

  /** `current()`: the connection messages may go to now (a write for any other is `connection-lost`). */
  constructor(private readonly current: () => C | undefined) {}

  /** A `pong` came with the server's clock. */
  pong(serverMs: number): void {
    this.clockOffset = serverMs - Date.now();
  }

  /**
   * Send a client message in order with the others; signed (§9) when the
   * server asks and `sign` is set. `after` runs right after the write.
   * Rejects with `connection-lost` when `conn` is no longer the current one.
   */
  enqueue(conn: C, msg: object, sign: boolean, after?: () => void): Promise<void> {
    const run = async () => {
      const lost = () => new CallbridgeError('connection-lost', 'the connection closed');
      if (this.current() !== conn) throw lost();
      let text = JSON.stringify(msg);
      if (sign && conn.signing) {
        text = JSON.stringify(await signEnvelope(text, conn.token, conn.userId, Date.now() + this.clockOffset));
        if (this.current() !== conn) throw lost();
      }
      conn.ws.send(text);
      after?.();
    };
    const p = this.chain.then(run);
    this.chain = p.catch(() => {});
    return p;
  }
}
