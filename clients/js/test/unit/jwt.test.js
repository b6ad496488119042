// When a token is refreshed: at about 80% of its lifetime.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { refreshAt, tokenTimes } from '../../dist/jwt.js';
import { jwt } from './helpers/fake-server.js';

test('exp and iat are read from the payload (base64url JSON); anything else has none', () => {
  assert.deepEqual(tokenTimes(jwt({ iat: 1000, lifetimeSecs: 60 })), { exp: 1060, iat: 1000 });
  assert.deepEqual(tokenTimes('opaque-token'), {});
  assert.deepEqual(tokenTimes('a.!!!.c'), {});
  assert.equal(refreshAt('opaque-token', 5), undefined);
});

test('a fresh token: 80% of exp - iat after it was received', () => {
  const t = jwt({ iat: 1000, lifetimeSecs: 100 });
  assert.equal(refreshAt(t, 1_000_000), 1_080_000);
});

test('a skewed local clock does not matter for a fresh token', () => {
  const t = jwt({ iat: 1000, lifetimeSecs: 100 });
  // Local clock an hour behind: still 80 s after receipt.
  assert.equal(refreshAt(t, 1_000_000 - 3_600_000), 1_000_000 - 3_600_000 + 80_000);
  // An hour ahead: never sooner than 10% of the lifetime.
  assert.equal(refreshAt(t, 1_000_000 + 3_600_000), 1_000_000 + 3_600_000 + 10_000);
});

test('a token received half used: 20% of the lifetime before exp', () => {
  const t = jwt({ iat: 1000, lifetimeSecs: 100 });
  assert.equal(refreshAt(t, 1_050_000), 1_080_000);
});

test('without iat: 80% of the way to exp', () => {
  const t = `x.${Buffer.from(JSON.stringify({ exp: 1100 })).toString('base64url')}.y`;
  assert.equal(refreshAt(t, 1_000_000), 1_080_000);
});
