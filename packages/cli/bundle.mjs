// Bundles the CLI into one CommonJS file: loading ~40 small modules costs every command a tenth of a second or
// more, one file does not, and node 20 loads it faster through `require` than as an ES module. The native addon,
// ssh2 (loaded on first SSH use) and the agent bundle stay outside; each object store's SDK goes in a bundle of its
// own (below). `import.meta.url` becomes the bundle's own URL
// (it sits in dist/ beside the modules it replaces, so paths resolved from it are the same).
import fs from 'node:fs';
import { build } from 'esbuild';

// The S3 and GCS sides of the store (each with its SDK), loaded by `@skysync/store/open` only for a bucket of
// that kind, go in bundles of their own: parsed with the CLI, their 3 MB would cost every command about a tenth of
// a second, and an S3 mount would pay for starting the GCS SDK too.
const STORE_SIDES = { 's3.js': './skysync-s3.cjs', 'gcs.js': './skysync-gcs.cjs' };
const storeSidesApart = {
  name: 'store-sides-apart',
  setup(b) {
    b.onResolve({ filter: /^\.\/(s3|gcs)\.js$/ }, (args) => {
      if (!/[\\/]store[\\/]dist$/.test(args.resolveDir)) return undefined;
      return { path: STORE_SIDES[args.path.slice(2)], external: true };
    });
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
  plugins: [storeSidesApart],
  // \`import()\` of a CommonJS file goes through the ES module loader, which scans the whole file for its export
  // names first: a fifth of a second for the 3 MB cloud bundle, more for ssh2. \`require\` reads it once.
  supported: { 'dynamic-import': false },
  define: { 'import.meta.url': '__skysyncBundleUrl' },
  banner: { js: "const __skysyncBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  legalComments: 'none',
  logLevel: 'warning',
});
for (const [side, out] of Object.entries(STORE_SIDES)) {
  await build({
    entryPoints: [`../store/dist/${side}`],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    outfile: `dist/${out}`,
    legalComments: 'none',
    logLevel: 'warning',
  });
}
// The ES module bundle of earlier builds would otherwise linger in dist/.
fs.rmSync('dist/skysync.mjs', { force: true });
fs.rmSync('dist/skysync-cloud.cjs', { force: true });
