// Reading `exp` and `iat` from a JWT payload (base64url JSON), without
// verifying anything: only to know when to refresh.

import { fromBase64 } from './encoding.js';

export interface TokenTimes {
  /** Seconds since epoch, when present. */
  exp?: number;
  iat?: number;
}

export function tokenTimes(token: string): TokenTimes {
  const part = token.split('.')[1];
  if (!part) return {};
  try {
    const claims = JSON.parse(new TextDecoder().decode(fromBase64(part))) as Record<string, unknown>;
    const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
    return { exp: num(claims.exp), iat: num(claims.iat) };
  } catch {
    return {};
  }
}

/**
 * When to refresh a token received at `receivedAt` (ms, local clock): at
 * about 80% of its lifetime. With `iat` and `exp` that is the sooner of
 * 80% of `exp - iat` after receipt (right even with a skewed local clock)
 * and 20% of the lifetime before `exp` by the local clock (right for a
 * token that was not fresh when received), but never sooner than 10% of
 * the lifetime after receipt. Without `iat`: 80% of the way to `exp`.
 * `undefined` when the token has no `exp` (an opaque token): it is then
 * renewed only when the server asks (4001, 1008, 4401).
 */
export function refreshAt(token: string, receivedAt: number): number | undefined {
  const { exp, iat } = tokenTimes(token);
  if (exp === undefined) return undefined;
  const expMs = exp * 1000;
  if (iat === undefined || exp <= iat) return receivedAt + Math.max(0, expMs - receivedAt) * 0.8;
  const lifetime = (exp - iat) * 1000;
  return Math.min(receivedAt + lifetime * 0.8, Math.max(expMs - lifetime * 0.2, receivedAt + lifetime * 0.1));
}
