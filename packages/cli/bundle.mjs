// Bundles the CLI into one ES module: loading ~40 small modules costs every command a tenth of a second or more,
// one file does not. The native addon, ssh2 (loaded on first SSH use) and the agent bundle stay outside.
import { build } from 'esbuild';

await build({
  entryPoints: ['dist/main.js'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  outfile: 'dist/skysync.mjs',
  external: ['@skysync/native', '@skysync/agent', 'ssh2'],
  banner: { js: "import { createRequire as __skysyncRequire } from 'node:module'; const require = __skysyncRequire(import.meta.url);" },
  legalComments: 'none',
  logLevel: 'warning',
});
