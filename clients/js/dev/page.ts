// The `/dev` page of `callbridge serve --dev` (contract §7): a one-page web
// dialer on the package, connected as the demo user with the token the
// daemon filled in, refreshed from `/dev/token`.

import { CallbridgeClient } from '../src/index.js';

declare global {
  interface Window {
    CALLBRIDGE_DEV: { token: string };
  }
}

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

function renderCalls() {
  const body = $<HTMLTableSectionElement>('calls');
  body.replaceChildren();
  const calls = client.activeCalls;
  if (calls.length === 0) {
    const row = body.insertRow();
    const cell = row.insertCell();
    cell.colSpan = 5;
    cell.className = 'muted';
    text(cell, 'none');
    return;
  }
  for (const c of calls) {
    const row = body.insertRow();
    row.dataset.call = c.callControlId;
    for (const v of [c.callControlId, c.direction, c.from, c.to, c.state]) {
      text(row.insertCell(), String(v ?? ''));
    }
  }
}

client.on('snapshot', (snap: { status?: string }) => {
  if (snap.status) ($('status') as HTMLSelectElement).value = snap.status;
  renderCalls();
});

client.on('event', (ev: { event: string; seq: number; data: unknown }) => {
  const li = document.createElement('li');
  const name = document.createElement('b');
  text(name, `#${ev.seq} ${ev.event}`);
  li.append(name, ' ', JSON.stringify(ev.data));
  $('events').prepend(li);
  text($('last-seq'), `(last seq ${client.lastSeq})`);
  renderCalls();
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

$('message').addEventListener('submit', async (e) => {
  e.preventDefault();
  const kind = ($('message-kind') as HTMLSelectElement).value;
  const target = ($('message-target') as HTMLInputElement).value.trim();
  const payload = ($('message-text') as HTMLTextAreaElement).value;
  try {
    const sent = kind === 'call'
      ? await client.send({ call: target, payload })
      : await client.send({ to: target, payload });
    text($('message-result'), `sent ${sent.id} to ${sent.recipients.length} recipient(s)`);
  } catch (err) {
    const code = (err as { code?: string }).code;
    text($('message-result'), `refused: ${code ?? (err as Error).message}`);
  }
});

client.start();
(window as unknown as { callbridge: CallbridgeClient }).callbridge = client;
