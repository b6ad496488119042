// `npm run size`: the package bundled and minified by esbuild (as an app
// would ship it), then gzipped. Fails when over the 12 KB budget. Also
// prints the size of the `/console` page as the daemon serves it (built by
// `npm run build:console-page`; no budget).

import { build } from 'esbuild';
import fs from 'node:fs';
import { gzipSync } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const BUDGET = 12 * 1024;
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const result = await build({
  entryPoints: [path.join(root, 'dist/index.js')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2022',
  write: false,
  legalComments: 'none',
});
const code = result.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 }).length;
console.log(`dist/index.js bundled + minified: ${code.length} bytes; gzip: ${gz} bytes (budget ${BUDGET})`);
const page = fs.readFileSync(path.resolve(root, '../../src/routes/console_page.html'));
console.log(`src/routes/console_page.html (as served, script minified): ${page.length} bytes; gzip: ${gzipSync(page, { level: 9 }).length} bytes`);
if (gz > BUDGET) {
  console.error(`over budget by ${gz - BUDGET} bytes`);
  process.exit(1);
}
