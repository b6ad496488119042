// The real daemon for the integration tests: `callbridge serve --dev` (the
// release build, or CALLBRIDGE_BIN) on a free loopback port with its own
// data dir, a TCP proxy in front of it that can cut or black-hole every
// connection, webhooks signed with the dev Ed25519 key exactly as Telnyx
// signs them (or posted by `callbridge simulate`), dialer tokens minted with
// the dev JWT secret, and the admin API.

import { execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import WS from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../../../..');
export const BIN = process.env.CALLBRIDGE_BIN ?? path.join(repo, 'target/release/callbridge');
export const ADMIN = 'js-integration-admin-token-0123';
export const DEMO = 'demo';
export const DEMO_PHONE = '+15550000001';

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Wait until `pred()` is truthy, checking every 20 ms, for at most `ms`. */
export async function until(pred, ms = 10_000, what = 'condition') {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * The dev signing key as a Node key. The daemon writes PKCS#8 v2 (with the
 * public key), which Node's OpenSSL refuses; the 32-byte seed inside it
 * (`04 22 04 20` + seed) goes into the v1 form instead.
 */
function ed25519Key(der) {
  const at = der.indexOf(Buffer.from([0x04, 0x22, 0x04, 0x20]));
  if (at < 0) throw new Error('no Ed25519 seed in the dev signing key');
  const seed = der.subarray(at + 4, at + 36);
  const v1 = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]);
  return crypto.createPrivateKey({ key: v1, format: 'der', type: 'pkcs8' });
}

export class Daemon {
  /** Start `serve --dev` with extra environment variables. */
  static async start(env = {}) {
    const d = new Daemon();
    d.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'callbridge-js-'));
    d.port = await freePort();
    const clean = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith('CALLBRIDGE_') && k !== 'NOTIFY_SOCKET'),
    );
    d.child = spawn(BIN, ['serve', '--dev'], {
      env: {
        ...clean,
        CALLBRIDGE_DATA_DIR: d.dir,
        CALLBRIDGE_LISTEN: `127.0.0.1:${d.port}`,
        CALLBRIDGE_ADMIN_TOKEN: ADMIN,
        RUST_LOG: process.env.CALLBRIDGE_TEST_LOG ?? 'warn',
        ...env,
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    d.exited = new Promise((r) => d.child.once('exit', r));
    await until(() => fs.existsSync(path.join(d.dir, 'ca.pem')), 20_000, 'the dev CA');
    d.ca = fs.readFileSync(path.join(d.dir, 'ca.pem'));
    await until(async () => (await d.request('GET', '/ready').catch(() => ({ status: 0 }))).status === 200, 20_000, 'the daemon to be ready');
    d.secret = fs.readFileSync(path.join(d.dir, 'jwt-secret'), 'utf8').trim();
    const der = Buffer.from(fs.readFileSync(path.join(d.dir, 'telnyx-signing-key.pk8.b64'), 'utf8').trim(), 'base64');
    d.signingKey = ed25519Key(der);
    return d;
  }

  get base() {
    return `https://127.0.0.1:${this.port}`;
  }

  /** One HTTPS request: { status, body (parsed JSON or text) }. */
  request(method, p, { body, headers = {}, port = this.port } = {}) {
    return new Promise((resolve, reject) => {
      const req = https.request(
        { host: '127.0.0.1', port, path: p, method, ca: this.ca, headers, agent: false },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c) => (text += c));
          res.on('end', () => {
            let parsed = text;
            try {
              parsed = JSON.parse(text);
            } catch {}
            resolve({ status: res.statusCode, body: parsed, text });
          });
        },
      );
      req.on('error', reject);
      if (body !== undefined) req.write(body);
      req.end();
    });
  }

  admin(method, p, json) {
    const headers = { authorization: `Bearer ${ADMIN}` };
    if (json !== undefined) headers['content-type'] = 'application/json';
    return this.request(method, p, { headers, body: json === undefined ? undefined : JSON.stringify(json) });
  }

  /** A webhook signed as Telnyx signs it: Ed25519 over `{timestamp}|{body}`. */
  async webhook(eventType, payload, id = crypto.randomUUID()) {
    const body = JSON.stringify({
      data: { record_type: 'event', id, event_type: eventType, occurred_at: new Date().toISOString(), payload },
      meta: { attempt: 1 },
    });
    const ts = Math.floor(Date.now() / 1000).toString();
    const signature = crypto.sign(null, Buffer.from(`${ts}|${body}`), this.signingKey).toString('base64');
    const r = await this.request('POST', '/webhooks/telnyx', {
      body,
      headers: { 'content-type': 'application/json', 'telnyx-signature-ed25519': signature, 'telnyx-timestamp': ts },
    });
    if (r.status !== 200) throw new Error(`webhook answered ${r.status}: ${r.text}`);
    return id;
  }

  /** An inbound call event to the demo user's number. */
  callEvent(eventType, call, extra = {}) {
    return this.webhook(eventType, {
      call_control_id: call,
      call_session_id: `session-${call}`,
      call_leg_id: `leg-${call}`,
      connection_id: 'js-tests',
      direction: 'incoming',
      from: '+15557770000',
      to: DEMO_PHONE,
      ...extra,
    });
  }

  /**
   * `callbridge simulate EVENT --to <demo's number> --call CALL`, as an
   * operator types it in a second terminal (same data dir and listen
   * address); resolves once the daemon answered 200.
   */
  async simulate(event, call, args = []) {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CALLBRIDGE_')));
    const { stdout } = await promisify(execFile)(BIN, ['simulate', event, '--to', DEMO_PHONE, '--call', call, ...args], {
      env: { ...env, CALLBRIDGE_DATA_DIR: this.dir, CALLBRIDGE_LISTEN: `127.0.0.1:${this.port}` },
    });
    if (!stdout.startsWith('HTTP 200')) throw new Error(`simulate ${event}: ${stdout}`);
  }

  /** An HS256 dialer token for `sub`, valid for `ttlSecs`. */
  token(sub = DEMO, ttlSecs = 3600) {
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const now = Math.floor(Date.now() / 1000);
    const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + ttlSecs })}`;
    const sig = crypto.createHmac('sha256', this.secret).update(unsigned).digest('base64url');
    return `${unsigned}.${sig}`;
  }

  /** The `ws` class, trusting this daemon's dev CA. */
  get WebSocket() {
    const ca = this.ca;
    return class TrustingWebSocket extends WS {
      constructor(url, protocols) {
        super(url, protocols, { ca });
      }
    };
  }

  async stop() {
    if (this.child.exitCode === null) {
      this.child.kill('SIGTERM');
      await Promise.race([this.exited, sleep(10_000)]);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A TCP proxy on a free port to `target`: `cut()` destroys every open
 * connection (the laptop's Wi-Fi drops), `blackhole()` keeps them open but
 * holds every byte either way, so nothing gets through and new connections
 * hang (a NAT that forgot us, a laptop asleep), `heal()` lets the held
 * bytes through, in order.
 */
export class Proxy {
  static async start(targetPort) {
    const p = new Proxy();
    p.targetPort = targetPort;
    p.pairs = new Set();
    p.holed = false;
    p.connections = 0;
    p.server = net.createServer((client) => p.accept(client));
    await new Promise((r) => p.server.listen(0, '127.0.0.1', r));
    p.port = p.server.address().port;
    return p;
  }

  accept(client) {
    if (this.refusing) {
      client.destroy();
      return;
    }
    this.connections += 1;
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    const pair = { client, upstream, held: [] };
    this.pairs.add(pair);
    const forward = (from, to) =>
      from.on('data', (chunk) => {
        if (this.holed) pair.held.push([to, chunk]);
        else to.write(chunk);
      });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  }

  cut() {
    for (const { client, upstream } of this.pairs) {
      client.resetAndDestroy?.() ?? client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  /** The network is gone: open connections cut, new ones reset at once. */
  down() {
    this.refusing = true;
    this.cut();
  }

  up() {
    this.refusing = false;
  }

  blackhole() {
    this.holed = true;
  }

  heal() {
    this.holed = false;
    for (const pair of this.pairs) {
      for (const [to, chunk] of pair.held) to.write(chunk);
      pair.held = [];
    }
  }

  url() {
    return `wss://127.0.0.1:${this.port}/ws`;
  }

  close() {
    this.cut();
    return new Promise((r) => this.server.close(r));
  }
}
