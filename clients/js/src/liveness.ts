// The dead-connection check. Browsers cannot see WebSocket protocol pings,
// so the client sends its own `ping` every `heartbeatSecs` and calls the
// connection dead when nothing at all arrived for `2 × heartbeatSecs +
// deadMarginMs`. Each tick compares wall-clock times, so a tick that comes
// late (a throttled background tab, a laptop that slept) still sees the
// silence; the next tick is armed from each incoming frame rather than
// chained from the last tick (browsers throttle chained timers hardest).

import { Timer, type Timers } from './timer.js';

export const PING = '{"type":"ping","data":{}}';
/** An `online` probe: no answer to a ping within this means dead. */
export const PROBE_MS = 3000;

/** What the check reads and writes on a connection. */
export interface Beat {
  /** `connected` arrived. */
  ready: boolean;
  heartbeatMs: number;
  lastHeard: number;
  lastPingAt: number;
  /** Set while an `online` probe ping waits for an answer. */
  probeAt?: number;
}

export interface LivenessHost<C extends Beat> {
  now(): number;
  isCurrent(conn: C): boolean;
  /** Send a `ping` now. */
  ping(conn: C): void;
  /** Nothing arrived for too long, or no answer to a probe: drop it and reconnect. */
  dead(conn: C, why: string): void;
  /** Each tick that finds the connection alive, before pinging. */
  alive(now: number): void;
}

export class Liveness<C extends Beat> {
  private readonly timer: Timer;

  constructor(
    private readonly host: LivenessHost<C>,
    timers: Timers,
    private readonly deadMarginMs: number,
  ) {
    this.timer = new Timer(timers);
  }

  /** Something arrived on `conn` (anything counts). */
  heard(conn: C): void {
    conn.lastHeard = this.host.now();
    conn.probeAt = undefined;
  }

  /** After a frame: the next tick, due when the next ping is. */
  rearm(conn: C): void {
    if (conn.ready) this.arm(conn, conn.lastPingAt + conn.heartbeatMs - conn.lastHeard);
  }

  arm(conn: C, ms: number): void {
    this.timer.stop();
    this.timer.start(Math.max(10, ms), () => this.tick(conn));
  }

  stop(): void {
    this.timer.stop();
  }

  /** Maybe fine, maybe dead after a network change: ping, and want an answer within `PROBE_MS`. */
  probe(conn: C): void {
    if (conn.probeAt !== undefined) return;
    conn.probeAt = this.host.now();
    this.host.ping(conn);
    this.arm(conn, PROBE_MS);
  }

  tick(conn: C): void {
    if (!this.host.isCurrent(conn) || !conn.ready) return;
    const t = this.host.now();
    const hb = conn.heartbeatMs;
    const deadAfter = 2 * hb + this.deadMarginMs;
    const silent = t - conn.lastHeard;
    const probing = conn.probeAt !== undefined && t - conn.probeAt >= PROBE_MS;
    if (silent > deadAfter || probing) {
      return this.host.dead(conn, probing ? 'no answer to a ping after going online' : `nothing received for ${Math.round(silent / 1000)} s`);
    }
    this.host.alive(t);
    if (t - conn.lastPingAt >= hb) {
      conn.lastPingAt = t;
      this.host.ping(conn);
    }
    let next = Math.min(conn.lastPingAt + hb - t, deadAfter - silent + 1);
    if (conn.probeAt !== undefined) next = Math.min(next, conn.probeAt + PROBE_MS - t);
    this.arm(conn, next);
  }
}
