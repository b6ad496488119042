// What every browser test shares: Debian's Chromium (never a downloaded
// browser) launched through playwright-core, and where screenshots go.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

/** Where screenshots are kept (CALLBRIDGE_ARTIFACTS, default target/artifacts). */
export const artifacts = process.env.CALLBRIDGE_ARTIFACTS ?? path.join(repo, 'target/artifacts');

/** Headless Chromium, as root in a sandbox with no network beyond loopback. */
export async function launchChromium() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: install Debian's chromium package (scripts/test.sh does in CI)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    // No sandbox, and none of Chromium's background connections (refused
    // by this machine's closed network, many at a time).
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
