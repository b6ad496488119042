// The user's active calls, as the server keeps them (contract §6): the
// snapshot sets them; `call-initiated` adds (ringing), `call-answered` →
// answered, `call-bridged` → bridged, `call-hangup` removes. Telnyx
// delivers late and twice: state follows `occurredAt`, and a hangup is
// final, so a late or repeated event never revives a call.

import type { ActiveCall, GenericData } from './types.js';

type CallState = ActiveCall['state'];

const TRANSITIONS: Record<string, CallState | 'hangup'> = {
  'call-initiated': 'ringing',
  'call-answered': 'answered',
  'call-bridged': 'bridged',
  'call-hangup': 'hangup',
};

/** Hung-up call ids remembered so late events cannot revive them. */
const ENDED_MAX = 2000;

interface Leg {
  call: ActiveCall;
  /** `occurredAt` (ms) of the event that set `state`. */
  stateMs: number;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

function parseMs(v: unknown): number | undefined {
  const ms = typeof v === 'string' ? Date.parse(v) : NaN;
  return Number.isNaN(ms) ? undefined : ms;
}

export class ActiveCalls {
  private legs = new Map<string, Leg>();
  private ended = new Set<string>();

  /** Replace everything with a snapshot's `activeCalls`. */
  reset(calls: ActiveCall[] | undefined): void {
    this.legs.clear();
    for (const c of calls ?? []) {
      if (!c || typeof c.callControlId !== 'string' || this.ended.has(c.callControlId)) continue;
      const stateMs = (c.state === 'ringing' ? undefined : parseMs(c.answeredAt)) ?? parseMs(c.startedAt) ?? -Infinity;
      this.legs.set(c.callControlId, { call: { ...c }, stateMs });
    }
  }

  /** Apply one stored event; true when the active calls changed. */
  apply(event: string, data: GenericData, ts: string | undefined): boolean {
    const transition = TRANSITIONS[event];
    const id = str(data.callControlId);
    if (!transition || !id || this.ended.has(id)) return false;
    if (transition === 'hangup') {
      this.ended.add(id);
      if (this.ended.size > ENDED_MAX) this.ended.delete(this.ended.values().next().value as string);
      return this.legs.delete(id);
    }
    const at = str(data.occurredAt) ?? ts;
    const ms = parseMs(at) ?? Date.now();
    let leg = this.legs.get(id);
    const before = leg && JSON.stringify(leg.call);
    if (!leg) {
      leg = { call: { callControlId: id, state: transition }, stateMs: -Infinity };
      this.legs.set(id, leg);
    }
    const c = leg.call;
    c.callSessionId ??= str(data.callSessionId);
    c.direction ??= str(data.direction);
    c.from ??= str(data.from);
    c.to ??= str(data.to);
    c.startedAt ??= str(data.startTime) ?? (transition === 'ringing' ? at : undefined);
    if (transition === 'answered') c.answeredAt ??= at;
    // A late event (older than the state held) only fills blanks.
    if (ms >= leg.stateMs) {
      c.state = transition;
      leg.stateMs = ms;
    }
    for (const k of Object.keys(c) as (keyof ActiveCall)[]) if (c[k] === undefined) delete c[k];
    return before !== JSON.stringify(c);
  }

  /** Oldest call first, like the server's snapshot; copies. */
  list(): ActiveCall[] {
    return [...this.legs.values()]
      .map((l) => ({ ...l.call }))
      .sort((a, b) => {
        const x = a.startedAt ?? '';
        const y = b.startedAt ?? '';
        if (x !== y) return x < y ? -1 : 1;
        return a.callControlId < b.callControlId ? -1 : a.callControlId > b.callControlId ? 1 : 0;
      });
  }
}
