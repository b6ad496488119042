// One named timer slot over injectable setTimeout/clearTimeout (tests pass
// their own), so each module owns its timers without knowing the clock.

/** The timer functions the client uses: the global ones by default. */
export interface Timers {
  set(fn: () => void, ms: number): unknown;
  clear(id: any): void;
}

export class Timer {
  private id: unknown;

  constructor(private readonly timers: Timers) {}

  /** A callback is pending. */
  get armed(): boolean {
    return this.id !== undefined;
  }

  /** Run `fn` after `ms`. Does not cancel a pending one: call `stop()` first to replace it. */
  start(ms: number, fn: () => void): void {
    this.id = this.timers.set(() => {
      this.id = undefined;
      fn();
    }, ms);
  }

  stop(): void {
    if (this.id !== undefined) {
      this.timers.clear(this.id);
      this.id = undefined;
    }
  }
}
