// The `/dev` page of `callbridge serve --dev` (contract §7, §14): a one-page
// web dialer on the package, connected as the demo user with the token the
// daemon filled in, refreshed from `/dev/token`. It lists the active calls
// (a call that hung up leaves the list) with Answer, Hang up, Transfer and
// DTMF buttons, dials, sends messages and status, signals "typing" while
// the message box is typed in, and shows the signals it receives. Without
// a Telnyx key the daemon's built-in stand-in answers the buttons.

import { CallbridgeClient } from '../src/index.js';
import type { ActiveCall, CallbridgeError, SignalData, SignalTarget } from '../src/index.js';

declare global {
  interface Window {
    CALLBRIDGE_DEV: { token: string };
  }
}

/** A typing signal is sent at most this often while the user types. */
const TYPING_EVERY_MS = 2000;
/** "… is typing" fades this long after the last typing signal. */
const TYPING_SHOWN_MS = 3000;
/** The received signals listed, newest first. */
const SIGNALS_KEPT = 8;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

let token: string | undefined = window.CALLBRIDGE_DEV.token;

async function getToken(): Promise<string> {
  // The filled-in token first; a fresh one whenever another is needed.
  if (token) {
    const t = token;
    token = undefined;
    return t;
  }
  const r = await fetch('/dev/token', { cache: 'no-store' });
  if (!r.ok) throw new Error(`/dev/token answered ${r.status}`);
  return ((await r.json()) as { token: string }).token;
}

const client = new CallbridgeClient({
  url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
  getToken,
});

function text(el: HTMLElement, value: string) {
  el.textContent = value;
}

/** A new element with some of its properties set (`className`, `size`, …). */
function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Record<string, unknown> = {}): HTMLElementTagNameMap[K] {
  return Object.assign(document.createElement(tag), props);
}

/** An error as a short line: the server's code, and what Telnyx said. */
function describe(err: unknown): string {
  const e = err as Partial<CallbridgeError>;
  let s = e.code ?? e.message ?? String(err);
  if (e.telnyx) {
    const first = e.telnyx.errors?.[0];
    const said = first?.detail ?? first?.title;
    s += ` (Telnyx ${e.telnyx.status}${said ? `: ${said}` : ''})`;
  }
  return s;
}

/** Show `what` on `line` while `job` runs, then its result or error code. */
async function report(line: HTMLElement, what: string, job: () => Promise<string>) {
  line.classList.remove('error');
  text(line, `${what}…`);
  try {
    text(line, `${what}: ${await job()}`);
  } catch (err) {
    line.classList.add('error');
    text(line, `${what} refused: ${describe(err)}`);
  }
}

client.on('state', ({ to, retryInMs, closeCode }) => {
  const el = $('state');
  el.dataset.state = to;
  let label: string = to;
  if (closeCode) label += ` (${closeCode})`;
  if (retryInMs !== undefined) label += `, retry in ${(retryInMs / 1000).toFixed(1)} s`;
  text(el, label);
});

client.on('connected', (data: { user?: string; userId?: string }) => {
  text($('who'), `as ${data.user ?? data.userId ?? ''}`);
});

// ---- active calls ---------------------------------------------------------

/** A call's two rows: what it is, and its buttons with their result line. */
interface CallRows {
  info: HTMLTableRowElement;
  cells: HTMLTableCellElement[];
  actions: HTMLTableRowElement;
}

const rows = new Map<string, CallRows>();

/** The buttons of one call, each calling `client.callAction`. */
function callControls(call: string): HTMLTableRowElement {
  const row = el('tr', { className: 'call-actions' });
  row.dataset.actionsFor = call;
  const cell = row.insertCell();
  cell.colSpan = 5;
  const controls = el('div', { className: 'controls' });
  const result = el('span', { className: 'result' });
  const button = (label: string, action: string, run: () => Promise<string>) => {
    const b = el('button', { type: 'button', textContent: label });
    b.dataset.action = action;
    b.addEventListener('click', async () => {
      b.disabled = true;
      await report(result, action, run);
      b.disabled = false;
    });
    return b;
  };
  /** `input` beside `b`: Enter in it clicks `b`. */
  const beside = (input: HTMLInputElement, b: HTMLButtonElement) => {
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') b.click();
    });
    const group = el('span', { className: 'group' });
    group.append(input, b);
    return group;
  };
  const ok = (r: unknown) => JSON.stringify(r);
  const transferTo = el('input', { type: 'tel', size: 14, placeholder: 'transfer to', className: 'transfer-to' });
  const digits = el('input', { size: 5, placeholder: 'digits', className: 'dtmf-digits' });
  const transfer = beside(
    transferTo,
    button('Transfer', 'transfer', async () => {
      const to = transferTo.value.trim();
      if (!to) throw new Error('enter a number to transfer to');
      return ok(await client.callAction('transfer', call, { to }));
    }),
  );
  const dtmf = beside(
    digits,
    button('Send DTMF', 'send_dtmf', async () => {
      const d = digits.value.trim();
      if (!d) throw new Error('enter digits (0-9, *, #, A-D)');
      return ok(await client.callAction('send_dtmf', call, { digits: d }));
    }),
  );
  controls.append(
    button('Answer', 'answer', async () => ok(await client.callAction('answer', call))),
    button('Hang up', 'hangup', async () => ok(await client.callAction('hangup', call))),
    transfer,
    dtmf,
    result,
  );
  cell.append(controls);
  return row;
}

function values(c: ActiveCall): string[] {
  return [c.callControlId, c.direction ?? '', c.from ?? '', c.to ?? '', c.state];
}

/**
 * The list follows `client.activeCalls`: a call that hung up leaves it. Rows
 * are kept per call and only their cells change, so what is typed in a
 * call's inputs, and its result line, survive the next event.
 */
function renderCalls() {
  const body = $<HTMLTableSectionElement>('calls');
  const calls = client.activeCalls;
  const live = new Set(calls.map((c) => c.callControlId));
  for (const [id, r] of rows) {
    if (live.has(id)) continue;
    r.info.remove();
    r.actions.remove();
    rows.delete(id);
  }
  $('no-calls').hidden = calls.length > 0;
  for (const c of calls) {
    let r = rows.get(c.callControlId);
    if (!r) {
      const info = el('tr', { className: 'call' });
      info.dataset.call = c.callControlId;
      const cells = values(c).map(() => info.insertCell());
      cells[4]!.className = 'state';
      r = { info, cells, actions: callControls(c.callControlId) };
      rows.set(c.callControlId, r);
      body.append(r.info, r.actions);
    }
    const v = values(c);
    r.cells.forEach((cell, i) => {
      if (cell.textContent !== v[i]) text(cell, v[i]!);
    });
  }
}

client.on('calls', renderCalls);

$('dial').addEventListener('submit', (e) => {
  e.preventDefault();
  const to = $<HTMLInputElement>('dial-to').value.trim();
  void report($('dial-result'), `dial ${to}`, async () => {
    if (!to) throw new Error('enter a number to dial');
    const call = await client.dial(to);
    return `calling, ${call.call_control_id}`;
  });
});

// ---- status, messages, events ----------------------------------------------

client.on('snapshot', (snap: { status?: string }) => {
  if (snap.status) ($('status') as HTMLSelectElement).value = snap.status;
});

client.on('event', (ev: { event: string; seq: number; data: unknown }) => {
  const li = document.createElement('li');
  const name = document.createElement('b');
  text(name, `#${ev.seq} ${ev.event}`);
  li.append(name, ' ', JSON.stringify(ev.data));
  $('events').prepend(li);
  text($('last-seq'), `(last seq ${client.lastSeq})`);
});

($('status') as HTMLSelectElement).addEventListener('change', async (e) => {
  const status = (e.target as HTMLSelectElement).value as 'available' | 'away' | 'busy';
  try {
    await client.setStatus(status);
    text($('status-result'), `saved: ${status}`);
  } catch (err) {
    text($('status-result'), `not saved: ${(err as Error).message}`);
  }
});

/** Who the message form is addressed to, as a `send`/`signal` target. */
function target(): SignalTarget | undefined {
  const kind = ($('message-kind') as HTMLSelectElement).value;
  const id = ($('message-target') as HTMLInputElement).value.trim();
  if (!id) return undefined;
  return kind === 'call' ? { call: id } : { to: id };
}

$('message').addEventListener('submit', async (e) => {
  e.preventDefault();
  const to = target();
  const payload = ($('message-text') as HTMLTextAreaElement).value;
  try {
    if (!to) throw new Error('enter a user id or a call id');
    const sent = await client.send({ ...to, payload });
    text($('message-result'), `sent ${sent.id} to ${sent.recipients.length} recipient(s)`);
    typing(false);
  } catch (err) {
    text($('message-result'), `refused: ${describe(err)}`);
  }
});

// ---- signals: "typing" ------------------------------------------------------

let typingSentAt = 0;

/** Tell the message's recipients that we type (at most every 2 s), or stopped. */
function typing(on: boolean) {
  const to = target();
  if (!to || client.state !== 'connected') return;
  const now = Date.now();
  if (on && now - typingSentAt < TYPING_EVERY_MS) return;
  if (!on && typingSentAt === 0) return;
  typingSentAt = on ? now : 0;
  // Fire and forget: a refusal arrives as an 'error' event (shown below).
  client.signal(to, 'typing', { on }).catch(() => {});
}

$('message-text').addEventListener('input', () => typing(true));

/** Who is typing, until when their indicator is shown. */
const typists = new Map<string, ReturnType<typeof setTimeout>>();

function renderTyping() {
  const who = [...typists.keys()];
  const line = $('typing');
  line.classList.toggle('on', who.length > 0);
  // Keep the last text while it fades out.
  if (who.length > 0) text(line, `${who.join(', ')} ${who.length > 1 ? 'are' : 'is'} typing…`);
}

function showSignal(line: string, sig?: SignalData) {
  const list = $('signals');
  list.querySelector('.muted')?.remove();
  const li = document.createElement('li');
  if (sig) {
    const name = document.createElement('b');
    text(name, sig.name);
    li.append(`${new Date().toLocaleTimeString()} `, name, ` ${line}`);
  } else {
    li.append(`${new Date().toLocaleTimeString()} ${line}`);
  }
  list.prepend(li);
  while (list.children.length > SIGNALS_KEPT) list.lastElementChild!.remove();
}

client.on('signal', (sig) => {
  const to = sig.call !== undefined ? `call ${sig.call}` : sig.to;
  showSignal(`from ${sig.from} to ${to}: ${JSON.stringify(sig.data)}`, sig);
  if (sig.name !== 'typing') return;
  clearTimeout(typists.get(sig.from));
  typists.delete(sig.from);
  if ((sig.data as { on?: unknown } | null)?.on !== false) {
    typists.set(
      sig.from,
      setTimeout(() => {
        typists.delete(sig.from);
        renderTyping();
      }, TYPING_SHOWN_MS),
    );
  }
  renderTyping();
});

// A server `error` that answers no request: a refused signal, a status not saved.
client.on('error', (data) => showSignal(`error ${data.code}: ${data.message}`));

client.start();
(window as unknown as { callbridge: CallbridgeClient }).callbridge = client;
