// Builds the `/dev` page the daemon embeds (src/routes/dev_page.html): the
// page's script and the package bundled by esbuild into one inline script
// of dev/page.html. The output is committed, so the daemon builds without
// Node; scripts/test.sh rebuilds it and fails when the committed one is stale.

import { build } from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.resolve(root, '../../src/routes/dev_page.html');

const result = await build({
  entryPoints: [path.join(root, 'dev/page.ts')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2020',
  write: false,
  legalComments: 'none',
});
// `</script` inside the code would end the inline script early.
const js = result.outputFiles[0].text.replaceAll('</script', '<\\/script');
const template = fs.readFileSync(path.join(root, 'dev/page.html'), 'utf8');
const html = template.replace('<!-- BUNDLE -->', () => `<script>${js.trimEnd()}</script>`);
// An unchanged page is not rewritten: a new mtime would make cargo rebuild
// the daemon (it embeds the file) after every test run.
const rel = path.relative(process.cwd(), out);
if (fs.existsSync(out) && fs.readFileSync(out, 'utf8') === html) {
  console.log(`${rel} is up to date (${html.length} bytes)`);
} else {
  fs.writeFileSync(out, html);
  console.log(`wrote ${rel} (${html.length} bytes)`);
}
