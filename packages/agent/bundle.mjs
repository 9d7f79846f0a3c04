// Bundles the agent into one CommonJS file that runs on node >= 18 with nothing installed. The native addon is
// not bundled: it is loaded from a file beside the bundle when one is there.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';

await build({
  entryPoints: ['dist/bin.js'],
  bundle: true,
  platform: 'node',
  target: 'node18',
  format: 'cjs',
  outfile: 'dist/agent.cjs',
  external: ['@skysync/native'],
  legalComments: 'none',
  // hash-wasm's default entry is an all-in-one UMD file; its ES module entry bundles much smaller.
  mainFields: ['module', 'main'],
  logLevel: 'warning',
});
const hash = createHash('sha256').update(readFileSync('dist/agent.cjs')).digest('hex').slice(0, 16);
writeFileSync('dist/agent.json', JSON.stringify({ file: 'agent.cjs', hash }) + '\n');
