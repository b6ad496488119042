// The operator's console, `GET /console` (contract §12): asks for the admin
// token (kept in this tab's sessionStorage only), reads
// `/api/console/stream` with it, and shows what the daemon reports: users,
// active calls, rates over 15 minutes, outbound endpoints, recovery, the
// last errors. Every figure is the daemon's; the page computes none but
// the peak of a chart and the age of a call. Text goes in as text
// (`textContent`), never as HTML.

import { drawChart, lastAndPeak, type Series } from './chart.js';
import { readStream, StreamError, type SseItem } from './sse.js';

const TOKEN_KEY = 'callbridge.console.adminToken';
const STREAM_URL = '/api/console/stream';
/** The server comments every 15 s: this long without a byte means a dead connection. */
const SILENCE_MS = 40_000;
const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;

interface UserRow { id: string; name: string | null; role: string; online: boolean; connections: number; status: string }
interface CallRow {
  callControlId: string; callSessionId: string | null; direction: string | null; from: string | null; to: string | null;
  state: string | null; startedAt: string | null; userIds: string[]; timeline: { event: string; ts: string }[];
}
interface Rates { intervalSecs: number; webhooks: number[]; deliveries: number[]; deliveryP50Ms: (number | null)[]; deliveryP99Ms: (number | null)[] }
interface EndpointRow {
  id: string; url: string; events: string[]; description: string; disabled: boolean;
  stats: { delivered: number; failed: number; pending: number };
}
interface Recovery { state: string; lastRunAt: string | null; lastSuccessAt: string | null; checkpoint: string | null; lastError: string | null }
interface LogRow { ts: string; level: string; message: string }
interface ConsoleData { users: UserRow[]; calls: CallRow[]; rates: Rates; endpoints: EndpointRow[]; recovery: Recovery; errors: LogRow[] }

const $ = <T extends Element = HTMLElement>(id: string) => document.getElementById(id) as unknown as T;

function node<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, cls?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function cell(row: HTMLTableRowElement, text: string, cls?: string): HTMLTableCellElement {
  const c = row.insertCell();
  c.textContent = text;
  if (cls) c.className = cls;
  return c;
}

function emptyRow(body: HTMLTableSectionElement, cols: number, text: string): void {
  const c = cell(body.insertRow(), text, 'muted');
  c.colSpan = cols;
}

function time(ts: string | null): string {
  if (!ts) return '—';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleTimeString([], { hour12: false });
}

function age(ts: string | null): string {
  if (!ts) return '';
  const s = Math.max(0, Math.round((Date.now() - new Date(ts).getTime()) / 1000));
  if (!Number.isFinite(s)) return '';
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

// ------------------------------------------------------------------ panels

function renderUsers(users: UserRow[]): void {
  const body = $<HTMLTableSectionElement>('users');
  body.replaceChildren();
  const online = users.filter((u) => u.online).length;
  $('users-count').textContent = `${online} online of ${users.length}`;
  if (users.length === 0) return emptyRow(body, 5, 'no users');
  for (const u of users) {
    const row = body.insertRow();
    row.dataset.user = u.id;
    row.dataset.online = String(u.online);
    const who = row.insertCell();
    who.append(node('span', '●', u.online ? 'dot on' : 'dot off'), ` ${u.id}`);
    if (u.name) who.append(node('span', ` ${u.name}`, 'muted'));
    cell(row, u.role);
    cell(row, u.online ? 'online' : 'offline', u.online ? 'ok' : 'muted');
    cell(row, String(u.connections), 'num');
    cell(row, u.status, `status-${u.status}`);
  }
}

function renderCalls(calls: CallRow[]): void {
  const body = $<HTMLTableSectionElement>('calls');
  body.replaceChildren();
  $('calls-count').textContent = `${calls.length}`;
  if (calls.length === 0) return emptyRow(body, 5, 'no active calls');
  for (const c of calls) {
    const row = body.insertRow();
    row.dataset.call = c.callControlId;
    row.dataset.state = c.state ?? '';
    cell(row, c.state ?? '?', `state state-${c.state ?? 'unknown'}`);
    const who = row.insertCell();
    who.append(node('div', `${c.from ?? '?'} → ${c.to ?? '?'}`), node('div', `${c.direction ?? ''} ${c.callControlId}`, 'muted small'));
    cell(row, c.userIds.length > 0 ? c.userIds.join(', ') : '(nobody)');
    cell(row, c.startedAt ? `${time(c.startedAt)} (${age(c.startedAt)})` : '—');
    const tl = node('ol', undefined, 'timeline');
    for (const e of c.timeline) {
      const li = node('li');
      li.append(node('span', time(e.ts), 'muted'), ` ${e.event}`);
      tl.append(li);
    }
    row.insertCell().append(tl);
  }
}

/** Draw a chart and print its figures beside it: the last second's value
 * and the window's peak of the first series (also as `data-now` /
 * `data-peak` on the figure, for tests and for copying). */
function figure(id: string, series: Series[], unit: string, digits: number): void {
  drawChart($<SVGSVGElement>(`${id}-svg`), series, unit);
  const fmt = (v: number | null) => (v === null ? '—' : v.toFixed(digits));
  const figures = series.map((s) => ({ label: s.label, ...lastAndPeak(s.values) }));
  const first = figures[0]!;
  const fig = $(id);
  fig.dataset.now = first.last === null ? '' : String(first.last);
  fig.dataset.peak = first.peak === null ? '' : String(first.peak);
  const now = figures.map((f) => (series.length > 1 ? `${f.label} ${fmt(f.last)}` : fmt(f.last))).join(' · ');
  const peak = figures.map((f) => (series.length > 1 ? `${f.label} ${fmt(f.peak)}` : fmt(f.peak))).join(' · ');
  $(`${id}-now`).textContent = `now ${now} ${unit} · peak ${peak} ${unit}`;
}

function renderRates(r: Rates): void {
  figure('chart-webhooks', [{ label: 'webhooks', color: '#0b5cad', values: r.webhooks }], '/s', 0);
  figure('chart-deliveries', [{ label: 'deliveries', color: '#12803a', values: r.deliveries }], '/s', 0);
  const latency = [
    { label: 'p50', color: '#0b5cad', values: r.deliveryP50Ms },
    { label: 'p99', color: '#c0392b', values: r.deliveryP99Ms },
  ];
  figure('chart-latency', latency, 'ms', 2);
  $('rates-span').textContent = `${r.webhooks.length} s of ${r.intervalSecs} s slots`;
}

/** Green: delivering; amber: some failed or a backlog building; red: mostly failing or a large backlog; grey: disabled. */
function health(e: EndpointRow): { cls: string; word: string } {
  const { delivered, failed, pending } = e.stats;
  if (e.disabled) return { cls: 'off', word: 'disabled' };
  if (pending >= 100 || failed > delivered) return { cls: 'bad', word: 'failing' };
  if (failed > 0 || pending >= 10) return { cls: 'warn', word: 'degraded' };
  return { cls: 'on', word: 'healthy' };
}

function renderEndpoints(endpoints: EndpointRow[]): void {
  const body = $<HTMLTableSectionElement>('endpoints');
  body.replaceChildren();
  if (endpoints.length === 0) return emptyRow(body, 6, 'no outbound endpoints');
  for (const e of endpoints) {
    const row = body.insertRow();
    row.dataset.endpoint = e.id;
    const h = health(e);
    row.dataset.health = h.word;
    const url = row.insertCell();
    url.append(node('span', '●', `dot ${h.cls}`), ` ${e.url}`);
    if (e.description) url.append(node('div', e.description, 'muted small'));
    cell(row, e.events.join(', '));
    cell(row, e.disabled ? 'disabled' : 'enabled', e.disabled ? 'muted' : 'ok');
    cell(row, String(e.stats.delivered), 'num');
    cell(row, String(e.stats.failed), e.stats.failed > 0 ? 'num bad-text' : 'num');
    cell(row, String(e.stats.pending), 'num');
  }
}

function renderRecovery(r: Recovery): void {
  const list = $('recovery');
  list.replaceChildren();
  list.dataset.state = r.state;
  const rows: [string, string][] = [
    ['state', r.state],
    ['last run', time(r.lastRunAt)],
    ['last success', time(r.lastSuccessAt)],
    ['checkpoint', r.checkpoint ?? '—'],
    ['last error', r.lastError ?? '—'],
  ];
  for (const [k, v] of rows) list.append(node('dt', k), node('dd', v));
}

function renderErrors(errors: LogRow[]): void {
  const list = $('errors');
  list.replaceChildren();
  if (errors.length === 0) list.append(node('li', 'nothing logged at warn or error', 'muted'));
  // Newest first.
  for (const e of [...errors].reverse()) {
    const li = node('li', undefined, `log-${e.level}`);
    li.append(node('span', time(e.ts), 'muted'), node('b', ` ${e.level} `), e.message);
    list.append(li);
  }
}

const data: Partial<ConsoleData> = {};

function apply(msg: Partial<ConsoleData>): void {
  Object.assign(data, msg);
  if (msg.users) renderUsers(msg.users);
  if (msg.calls) renderCalls(msg.calls);
  if (msg.rates) renderRates(msg.rates);
  if (msg.endpoints) renderEndpoints(msg.endpoints);
  if (msg.recovery) renderRecovery(msg.recovery);
  if (msg.errors) renderErrors(msg.errors);
}

// ------------------------------------------------------------------ session

function setState(state: 'connecting' | 'live' | 'retrying' | 'out', detail = ''): void {
  const el = $('state');
  el.dataset.state = state;
  el.textContent = detail ? `${state} — ${detail}` : state;
}

let stop: AbortController | undefined;
let lastMessage = 0;

function showLogin(message: string): void {
  stop?.abort();
  stop = undefined;
  $('app').hidden = true;
  $('login').hidden = false;
  $('logout').hidden = true;
  $('login-message').textContent = message;
  setState('out');
  $<HTMLInputElement>('token').focus();
}

function onItem(item: SseItem): void {
  if (item.kind !== 'data') return;
  lastMessage = Date.now();
  apply(JSON.parse(item.data) as Partial<ConsoleData>);
  setState('live');
}

/** Read the stream until logged out; reconnect with backoff when it drops. */
async function run(token: string, ctrl: AbortController): Promise<void> {
  let failures = 0;
  while (!ctrl.signal.aborted) {
    setState(failures === 0 ? 'connecting' : 'retrying');
    const before = lastMessage;
    try {
      await readStream(STREAM_URL, token, ctrl.signal, SILENCE_MS, onItem);
      // The daemon ended it (a restart): reconnect, after a pause like any drop.
      throw new StreamError('the daemon ended the stream');
    } catch (e) {
      if (ctrl.signal.aborted) return;
      if (e instanceof StreamError && (e.status === 401 || e.status === 404)) {
        sessionStorage.removeItem(TOKEN_KEY);
        const why = e.status === 401 ? 'the daemon refused this token (401)' : 'the console is off: no admin token is configured (404)';
        return showLogin(why);
      }
      failures = lastMessage > before ? 1 : failures + 1;
      // Full jitter: many consoles reconnecting after a restart spread out.
      const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (failures - 1));
      const wait = Math.round(Math.random() * ceiling) + 250;
      setState('retrying', `${(e as Error).message}; again in ${(wait / 1000).toFixed(1)} s`);
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

function start(token: string): void {
  stop?.abort();
  stop = new AbortController();
  $('login').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  void run(token, stop);
}

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $<HTMLInputElement>('token');
  const token = input.value.trim();
  if (!token) return;
  input.value = '';
  sessionStorage.setItem(TOKEN_KEY, token);
  start(token);
});

$('logout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin('logged out');
});

// The age of calls and of the last message move without a message.
setInterval(() => {
  if (data.calls) renderCalls(data.calls);
  if (lastMessage > 0) $('last-message').textContent = `last change ${age(new Date(lastMessage).toISOString())} ago`;
}, 1000);

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) start(saved);
else showLogin('');
