// The client's listeners: a map of name → set, where a listener's
// exception never reaches the code that emitted.

export type Fn = (...args: any[]) => void;

function report(e: unknown): void {
  // A listener's exception must not break the client; surface it like an
  // uncaught one, outside the client's own call stack.
  queueMicrotask(() => {
    throw e;
  });
}

export class Emitter {
  private readonly listeners = new Map<string, Set<Fn>>();

  /** Listen; returns a function that removes the listener. */
  on(name: string, fn: Fn): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(fn);
    return () => this.off(name, fn);
  }

  off(name: string, fn: Fn): void {
    this.listeners.get(name)?.delete(fn);
  }

  /** Call every listener of `name` (those present when it starts), in the order they were added. */
  emit(name: string, ...args: unknown[]): void {
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
}
