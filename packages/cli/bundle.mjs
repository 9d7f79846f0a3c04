// Bundles the CLI into one CommonJS file: loading ~40 small modules costs every command a tenth of a second or
// more, one file does not, and node 20 loads it faster through `require` than as an ES module. The native addon,
// ssh2 (loaded on first SSH use), the object stores' SDKs (@skysync/store/cloud, loaded for buckets only: bundled, they
// double every command's start) and the agent bundle stay outside. `import.meta.url` becomes the bundle's own URL
// (it sits in dist/ beside the modules it replaces, so paths resolved from it are the same).
import fs from 'node:fs';
import { build } from 'esbuild';

await build({
  entryPoints: ['dist/main.js'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outfile: 'dist/skysync.cjs',
  external: ['@skysync/native', '@skysync/agent', 'ssh2', '@skysync/store/cloud'],
  define: { 'import.meta.url': '__skysyncBundleUrl' },
  banner: { js: "const __skysyncBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  legalComments: 'none',
  logLevel: 'warning',
});
// The ES module bundle of earlier builds would otherwise linger in dist/.
fs.rmSync('dist/skysync.mjs', { force: true });
