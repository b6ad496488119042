// What the client does after the server closes the connection with a code.
// This is the one table the client reads; README.md shows the same table.

/**
 * - `stop`: stop for good (`stopped` event), never retry.
 * - `new-token-once`: fetch a new token and reconnect at once; if the next
 *   connection is refused with the same code before `connected`, stop.
 * - `new-token`: fetch a new token, reconnect at once.
 * - `reconnect-now`: reconnect at once (with `since`, as always).
 * - `backoff-floor`: back off, never less than `backoff.floorMs` (5 s).
 * - `restart-jitter`: the server is restarting: reconnect after a random
 *   0 – `backoff.restartMaxMs` (5 s), so clients do not come back at once.
 * - `backoff`: full-jitter exponential backoff (0.5 s up to 20 s).
 *
 * "At once" means the first time; when the connection before it did not
 * stay up for `backoff.resetAfterMs`, the normal backoff applies instead,
 * so a server that keeps closing never gets a tight reconnect loop.
 */
export type CloseAction =
  | 'stop'
  | 'new-token-once'
  | 'new-token'
  | 'reconnect-now'
  | 'backoff-floor'
  | 'restart-jitter'
  | 'backoff';

export const CLOSE_CODE_ACTIONS: Readonly<Record<number, CloseAction>> = Object.freeze({
  /** Token missing, invalid, expired, unknown or disabled user, revoked. */
  1008: 'new-token-once',
  /** The token expired while connected. */
  4001: 'new-token',
  /** User deleted or tokens revoked. */
  4003: 'stop',
  /** Too many connections for this user. */
  4008: 'backoff-floor',
  /** Client message rate limit exceeded. */
  4029: 'backoff-floor',
  /** The store could not be reached: try again later. */
  1013: 'backoff-floor',
  /** Slow consumer: reconnect with `since`. */
  4013: 'reconnect-now',
  /** No `auth` message in time. */
  4401: 'new-token',
  /** The daemon is shutting down. */
  1001: 'restart-jitter',
});

/** The action for a close code; anything not in the table backs off. */
export function closeAction(code: number | undefined): CloseAction {
  return (code !== undefined && CLOSE_CODE_ACTIONS[code]) || 'backoff';
}
