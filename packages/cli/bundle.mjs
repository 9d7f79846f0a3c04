// Bundles the CLI into one CommonJS file: loading ~40 small modules costs every command a tenth of a second or
// more, one file does not, and node 20 loads it faster through `require` than as an ES module. The native addon,
// ssh2 (loaded on first SSH use) and the agent bundle stay outside; the object stores' SDKs go in a bundle of their
// own (below). `import.meta.url` becomes the bundle's own URL
// (it sits in dist/ beside the modules it replaces, so paths resolved from it are the same).
import fs from 'node:fs';
import { build } from 'esbuild';

// The S3 and GCS SDKs (`@skysync/store/cloud`, loaded only by commands that touch a bucket) go in a bundle of their
// own: parsed with the CLI, their 3 MB would cost every command about a tenth of a second.
const CLOUD_BUNDLE = './skysync-cloud.cjs';
const cloudApart = {
  name: 'cloud-apart',
  setup(b) {
    b.onResolve({ filter: /^@skysync\/store\/cloud$/ }, () => ({ path: CLOUD_BUNDLE, external: true }));
  },
};

await build({
  entryPoints: ['dist/main.js'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outfile: 'dist/skysync.cjs',
  external: ['@skysync/native', '@skysync/agent', 'ssh2'],
  plugins: [cloudApart],
  define: { 'import.meta.url': '__skysyncBundleUrl' },
  banner: { js: "const __skysyncBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  legalComments: 'none',
  logLevel: 'warning',
});
await build({
  entryPoints: ['../store/dist/cloud.js'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outfile: `dist/${CLOUD_BUNDLE}`,
  legalComments: 'none',
  logLevel: 'warning',
});
// The ES module bundle of earlier builds would otherwise linger in dist/.
fs.rmSync('dist/skysync.mjs', { force: true });
