// Builds the `/console` page the daemon embeds (src/routes/console_page.html):
// console/page.ts and its modules bundled and minified by esbuild into the
// one inline script of console/page.html. The output is committed, so the
// daemon builds without Node; scripts/test-js.sh rebuilds it and fails
// when the committed one is stale. Prints the page's size, minified and
// gzipped (what a browser downloads).

import { build } from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.resolve(root, '../../src/routes/console_page.html');

const result = await build({
  entryPoints: [path.join(root, 'console/page.ts')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2020',
  write: false,
  legalComments: 'none',
});
// `</script` inside the code would end the inline script early.
const js = result.outputFiles[0].text.replaceAll('</script', '<\\/script').trimEnd();
const template = fs.readFileSync(path.join(root, 'console/page.html'), 'utf8');
const html = template.replace('<!-- BUNDLE -->', () => `<script>${js}</script>`);
fs.writeFileSync(out, html);
const bytes = Buffer.byteLength(html);
const gz = gzipSync(html, { level: 9 }).length;
console.log(
  `wrote ${path.relative(process.cwd(), out)}: ${bytes} bytes (script ${Buffer.byteLength(js)} bytes minified); gzip: ${gz} bytes`,
);
