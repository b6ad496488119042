// Builds one of the pages the daemon embeds (`dev`: GET /dev, `console`:
// GET /console) from its TypeScript source into one self-contained HTML
// file in src/routes/, and prints its size as served and gzipped (what a
// browser downloads). Usage: node scripts/build-page.mjs dev|console

import { build } from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const page = process.argv[2];
if (page !== 'dev' && page !== 'console') {
  console.error('usage: build-page.mjs dev|console');
  process.exit(2);
}
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.resolve(root, `../../src/routes/${page}_page.html`);

const result = await build({
  entryPoints: [path.join(root, page, 'page.ts')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2020',
  write: false,
  legalComments: 'none',
});
// `</script` inside the code would end the inline script early.
const js = result.outputFiles[0].text.replaceAll('</script', '<\\/script').trimEnd();
const template = fs.readFileSync(path.join(root, page, 'page.html'), 'utf8');
const html = template.replace('<!-- BUNDLE -->', () => `<script>${js}</script>`);
const sizes = `${Buffer.byteLength(html)} bytes (script ${Buffer.byteLength(js)} bytes minified); gzip: ${gzipSync(html, { level: 9 }).length} bytes`;
// An unchanged page is not rewritten: a new mtime would make cargo rebuild
// the daemon (it embeds the file) after every test run.
const rel = path.relative(process.cwd(), out);
if (fs.existsSync(out) && fs.readFileSync(out, 'utf8') === html) {
  console.log(`${rel} is up to date: ${sizes}`);
} else {
  fs.writeFileSync(out, html);
  console.log(`wrote ${rel}: ${sizes}`);
}
