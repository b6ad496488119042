// Signed client messages (contract §9), with Web Crypto: `crypto.subtle`
// is a global in browsers, Electron renderers and Node 20.

import { toBase64, toHex, utf8 } from './encoding.js';

/** The key window of §9: the key changes every 5 minutes. */
export const SIGNING_WINDOW_MS = 300_000;

/** The envelope a signed client message is sent in. */
export interface SignedEnvelope {
  signed: string;
  timestamp: number;
  nonce: string;
  signature: string;
}

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (!s) {
    throw Object.assign(
      new Error('Web Crypto (crypto.subtle) is not available: signing needs a secure context (https, localhost, file:)'),
      { code: 'signing-unavailable' },
    );
  }
  return s;
}

/** A fresh nonce: base64 of 16 random bytes. */
export function randomNonce(): string {
  return toBase64(globalThis.crypto.getRandomValues(new Uint8Array(16)));
}

/**
 * The HMAC key of §9: the UTF-8 bytes of the lowercase hex SHA-256 of
 * `"{token}:{userId}:{floor(timestamp / 300000)}"`.
 */
export async function signingKey(token: string, userId: string, timestamp: number): Promise<string> {
  const window = Math.floor(timestamp / SIGNING_WINDOW_MS);
  const digest = await subtle().digest('SHA-256', utf8(`${token}:${userId}:${window}`));
  return toHex(new Uint8Array(digest));
}

/**
 * Sign one client message's JSON text: returns the §9 envelope.
 * `timestamp` (ms since epoch) and `nonce` (base64) default to now and 16
 * random bytes; pass them only to reproduce a known signature.
 */
export async function signEnvelope(
  signed: string,
  token: string,
  userId: string,
  timestamp: number = Date.now(),
  nonce: string = randomNonce(),
): Promise<SignedEnvelope> {
  const s = subtle();
  const key = await s.importKey(
    'raw',
    utf8(await signingKey(token, userId, timestamp)),
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['sign'],
  );
  const mac = await s.sign('HMAC', key, utf8(`${timestamp}.${nonce}.${signed}`));
  return { signed, timestamp, nonce, signature: toBase64(new Uint8Array(mac)) };
}

