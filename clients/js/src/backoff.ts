// How long to wait before the next connection attempt: full-jitter
// exponential backoff, and the delay each close-code action asks for.

import type { CloseAction } from './close-codes.js';
import type { BackoffOptions } from './options.js';

export class Backoff {
  /** Tries since the last connection that stayed up for `resetAfterMs`. */
  attempt = 0;

  constructor(
    private readonly o: Required<BackoffOptions>,
    private readonly random: () => number,
  ) {}

  /** Full jitter: random in [0, min(max, base × 2^attempt)). */
  delay(): number {
    return this.random() * Math.min(this.o.maxMs, this.o.baseMs * 2 ** Math.min(this.attempt, 30));
  }

  /** At once, unless the last connection did not stay up (then back off). */
  soon(): number {
    return this.attempt === 0 ? 0 : this.delay();
  }

  /** The wait a close action asks for (`stop` aside, which never retries). */
  afterClose(action: CloseAction): number {
    switch (action) {
      case 'new-token-once':
      case 'new-token':
      case 'reconnect-now':
        return this.soon();
      case 'backoff-floor': {
        // At least floorMs, plus a random share of it that grows per try.
        const f = this.o.floorMs;
        return Math.min(Math.max(this.o.maxMs, f), f + this.random() * f * 2 ** Math.min(this.attempt, 30));
      }
      case 'restart-jitter':
        return this.random() * this.o.restartMaxMs;
      default:
        return this.delay();
    }
  }

  /** A connection ended; it had been up `upMs` (undefined: it never got `connected`). */
  ended(upMs: number | undefined): void {
    if (upMs !== undefined && upMs >= this.o.resetAfterMs) this.attempt = 0;
  }
}
