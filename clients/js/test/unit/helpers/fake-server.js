// An in-process fake callbridge server for the unit tests: a `ws`
// WebSocketServer on 127.0.0.1 (plain ws://, port 0) whose connections the
// tests script by hand — greetings, replays, gaps, close codes, silence.

import { once } from 'node:events';
import WebSocket, { WebSocketServer } from 'ws';

import { CallbridgeClient } from '../../../dist/index.js';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Wait until `pred()` is truthy (checked every 5 ms), at most `ms`. */
export async function until(pred, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

/** An unsigned JWT-shaped token (the fake server never verifies it). */
export function jwt({ sub = 'u1', lifetimeSecs = 3600, iat = Math.floor(Date.now() / 1000), n = 0 } = {}) {
  return `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub, iat, exp: iat + lifetimeSecs, n })}.sig${n}`;
}

/** A stored event frame. */
export function ev(seq, event = 'dtmf-received', data = {}, ts = new Date().toISOString()) {
  return { event, data, seq, id: `ev-${seq}`, ts };
}

/** One client connection as the server sees it. */
export class ServerConn {
  constructor(ws, req) {
    this.ws = ws;
    this.url = new URL(req.url, 'ws://fake');
    this.protocols = String(req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const bearer = this.protocols.find((p) => p.startsWith('bearer.'));
    this.token = this.url.searchParams.get('token') ?? (bearer ? bearer.slice('bearer.'.length) : undefined);
    this.since = this.url.searchParams.has('since') ? Number(this.url.searchParams.get('since')) : undefined;
    /** Client messages, parsed, in order. */
    this.received = [];
    this.raw = [];
    this.closed = false;
    /** Answer `ping` with `pong` (turn off to black-hole). */
    this.answerPings = true;
    this.waiters = [];
    ws.on('message', (data) => {
      const text = data.toString();
      this.raw.push(text);
      let msg;
      try {
        msg = JSON.parse(text);
      } catch {
        msg = { unparseable: text };
      }
      this.received.push(msg);
      if (msg.type === 'ping' && this.answerPings) this.send({ event: 'pong', data: { timestamp: Date.now() } });
      this.waiters = this.waiters.filter((w) => !w(msg));
    });
    ws.on('close', () => {
      this.closed = true;
    });
    ws.on('error', () => {});
  }

  send(frame) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** `connected`, [replayed events + `resumed` when the client sent `since`], `snapshot`. */
  greet({ userId = 'u1', heartbeatSecs = 25, lastSeq = 0, signing, replay = [], gap = false, status = 'available', activeCalls = [] } = {}) {
    const data = { clientId: 'c1', user: `${userId}@example.com`, userId, protocol: 1, heartbeatSecs, lastSeq };
    if (signing) data.signing = signing;
    this.send({ event: 'connected', data });
    if (this.since !== undefined) {
      for (const e of replay) this.send(e);
      const to = replay.length ? replay[replay.length - 1].seq : lastSeq;
      this.send({ event: 'resumed', data: { from: this.since, to, gap } });
    }
    this.send({ event: 'snapshot', data: { status, activeCalls } });
  }

  /** The next client message matching `pred` (past ones included when `past`). */
  next(pred = () => true, ms = 5000, past = false) {
    if (typeof pred === 'string') {
      const type = pred;
      pred = (m) => m.type === type;
    }
    if (past) {
      const found = this.received.find(pred);
      if (found) return Promise.resolve(found);
    }
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no matching client message')), ms);
      this.waiters.push((m) => {
        if (!pred(m)) return false;
        clearTimeout(t);
        resolve(m);
        return true;
      });
    });
  }

  close(code, reason = '') {
    this.ws.close(code, reason);
  }

  /** Drop the TCP connection without a close frame (the client sees 1006). */
  cut() {
    this.ws.terminate();
  }
}

/** Everything a test started, stopped after it however it ended (see `cleanup`). */
const live = { clients: new Set(), servers: new Set() };

/** For `afterEach(cleanup)`: stop every client, close every server. */
export async function cleanup() {
  for (const c of live.clients) c.stop();
  live.clients.clear();
  await Promise.all([...live.servers].map((s) => s.close()));
  live.servers.clear();
}

export class FakeServer {
  static async start(onConnection) {
    const s = new FakeServer();
    live.servers.add(s);
    s.wss = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      handleProtocols: (protocols) => (protocols.has('callbridge.v1') ? 'callbridge.v1' : false),
    });
    s.connections = [];
    s.arrivals = [];
    s.wss.on('connection', (ws, req) => {
      const c = new ServerConn(ws, req);
      s.connections.push(c);
      onConnection?.(c, s.connections.length - 1);
      for (const w of s.arrivals.splice(0)) w(c);
    });
    await once(s.wss, 'listening');
    s.url = `ws://127.0.0.1:${s.wss.address().port}/ws`;
    return s;
  }

  /** Resolves with the next connection (or with connection `index` once it exists). */
  connection(index, ms = 5000) {
    if (index !== undefined && this.connections[index]) return Promise.resolve(this.connections[index]);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no connection ${index ?? ''}`)), ms);
      const want = (c) => {
        if (index !== undefined && this.connections.indexOf(c) !== index) {
          this.arrivals.push(want);
          return;
        }
        clearTimeout(t);
        resolve(c);
      };
      this.arrivals.push(want);
    });
  }

  async close() {
    if (!live.servers.delete(this)) return;
    for (const c of this.wss.clients) c.terminate();
    await new Promise((r) => this.wss.close(r));
  }
}

/** Test-sized backoff: behaviour, not speed. */
export const FAST = { baseMs: 20, maxMs: 100, floorMs: 300, restartMaxMs: 200, resetAfterMs: 10_000 };

/**
 * A client on `server` recording what it hands out: `c.seen` (every
 * 'event'), `c.states` (every 'state'), `c.tokens` (getToken results).
 */
export function client(server, opts = {}) {
  const tokens = [];
  const getToken =
    opts.getToken ??
    (async () => {
      const t = jwt({ n: tokens.length });
      tokens.push(t);
      return t;
    });
  const c = new CallbridgeClient({ url: server.url, WebSocket, backoff: FAST, random: () => 0.5, ...opts, getToken });
  live.clients.add(c);
  c.tokens = tokens;
  c.seen = [];
  c.states = [];
  c.on('event', (e) => c.seen.push(e));
  c.on('state', (s) => c.states.push(s));
  return c;
}
