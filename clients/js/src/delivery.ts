// Every stored event exactly once, in seq order: `lastSeq` (loaded from an
// option or storage, saved after each event), duplicates dropped, events
// ahead of a hole held back until it fills (a `resume` asked for when it
// does not), and gaps the server reports in `resumed`.

import { Timer, type Timers } from './timer.js';
import type { SeqStorage } from './options.js';
import type { GapInfo, ResumedData, ServerFrame } from './types.js';

/** A stored event frame: it has a `seq`. */
export type StoredFrame = ServerFrame & { seq: number };

export interface DeliveryHost {
  /** Hand out one stored event; `lastSeq` is its `seq` already. */
  deliver(frame: StoredFrame): void;
  /** A `resumed` frame arrived (before the client acts on it). */
  resumed(data: ResumedData): void;
  /** History no longer reached back (or a replay left a hole): the client moves on from `to`. */
  gap(info: GapInfo): void;
  /** Ask the server for a replay after `since`; false when no connection is ready. */
  resume(since: number): boolean;
}

export interface DeliveryOptions {
  /** A resume point given by the caller; wins over `storage`. */
  lastSeq: number | undefined;
  storage: SeqStorage | undefined;
  /** How long an event ahead of a hole waits before a `resume` is asked for. */
  holeTimeoutMs: number;
}

export class Delivery {
  private seq = 0;
  /** A resume point is known: connect with `since`. */
  private hasPosition = false;
  /** The resume point was loaded (from the option or storage). */
  loaded = false;
  /** Stored events that arrived ahead of a hole, by seq. */
  private readonly held = new Map<number, StoredFrame>();
  private resumeAsked = false;
  private readonly holeTimer: Timer;
  /** Bumped by `reset()`: a loop over events stops when its connection ended under it (a listener's doing). */
  private epoch = 0;

  constructor(
    private readonly host: DeliveryHost,
    private readonly o: DeliveryOptions,
    timers: Timers,
  ) {
    this.holeTimer = new Timer(timers);
  }

  /** The highest `seq` handed out (or the resume point). */
  get lastSeq(): number {
    return this.seq;
  }

  /** Load the resume point: the `lastSeq` option, else `storage`. */
  async load(): Promise<void> {
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
      this.seq = Math.floor(seq);
      this.hasPosition = true;
    }
  }

  /** The `since` to connect with; undefined for a fresh start. */
  since(): number | undefined {
    return this.hasPosition ? this.seq : undefined;
  }

  /** `connected` arrived; without `since`, the server's `lastSeq` is where this client starts. */
  connected(withSince: boolean, serverLastSeq: unknown): void {
    if (!withSince) {
      // A fresh start: the server sends what is stored after its lastSeq.
      const seq = typeof serverLastSeq === 'number' ? serverLastSeq : 0;
      if (seq !== this.seq) this.setLastSeq(seq);
    }
    this.hasPosition = true;
  }

  /** A stored event arrived (live or replayed). */
  stored(f: StoredFrame): void {
    const seq = f.seq;
    if (!Number.isInteger(seq) || seq <= this.seq) return;
    if (seq > this.seq + 1) {
      this.held.set(seq, f);
      if (!this.holeTimer.armed && !this.resumeAsked) this.holeTimer.start(this.o.holeTimeoutMs, () => this.askResume());
      return;
    }
    const epoch = this.epoch;
    this.deliver(f);
    // A listener may have stopped the client (which clears `held`).
    for (let next = this.held.get(this.seq + 1); next && this.epoch === epoch; next = this.held.get(this.seq + 1)) {
      this.held.delete(next.seq);
      this.deliver(next);
    }
    for (const s of this.held.keys()) if (s <= this.seq) this.held.delete(s);
    if (this.held.size === 0) {
      this.holeTimer.stop();
      this.resumeAsked = false;
    }
  }

  /** The server's `resumed`: after a replay, with `gap` when history no longer reached back. */
  resumed(data: ResumedData): void {
    const epoch = this.epoch;
    this.host.resumed(data);
    if ((!data.gap && this.held.size === 0) || this.epoch !== epoch) return;
    // History no longer reaches back (or, never expected, the replay left
    // a hole): say so, then accept what came and move on from there.
    const held = [...this.held.values()].sort((a, b) => a.seq - b.seq);
    this.held.clear();
    this.holeTimer.stop();
    this.resumeAsked = false;
    const mine = this.seq;
    const serverTo = typeof data.to === 'number' ? data.to : mine;
    // Continue right before the first event that came, else from the
    // server's last seq (lower than ours when its history was lost).
    const next = held.length ? held[0]!.seq - 1 : serverTo;
    this.setLastSeq(next);
    this.host.gap(data.gap ? { from: typeof data.from === 'number' ? data.from : mine, to: serverTo } : { from: mine, to: next });
    for (const f of held) {
      if (this.epoch !== epoch) return;
      this.deliver(f);
    }
  }

  /** The connection ended: held events go (the next connection replays them). */
  reset(): void {
    this.epoch++;
    this.holeTimer.stop();
    this.held.clear();
    this.resumeAsked = false;
  }

  /** The hole did not fill by itself: ask for a replay after lastSeq. */
  private askResume(): void {
    if (this.held.size === 0 || !this.host.resume(this.seq)) return;
    this.resumeAsked = true;
  }

  private deliver(f: StoredFrame): void {
    this.seq = f.seq;
    this.host.deliver(f);
    this.persist();
  }

  private setLastSeq(seq: number): void {
    this.seq = seq;
    this.persist();
  }

  private persist(): void {
    const s = this.o.storage;
    if (!s) return;
    try {
      const r = s.set(this.seq);
      if (r && typeof (r as Promise<void>).catch === 'function') (r as Promise<void>).catch(() => {});
    } catch {
      // A full or unavailable storage costs a longer replay, nothing more.
    }
  }
}
