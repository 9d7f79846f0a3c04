// Bundles the agent into one CommonJS file that runs on node >= 18 with nothing installed. The native addon is
// not bundled: it is loaded from a file beside the bundle when one is there.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';

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
// The remote file names come from this hash (`<hash>.cjs`, and `<hash>.node` for the addon uploaded with it), so
// it covers the addon built here too: two skysync builds pushing to one machine never load each other's addon.
const nativeDir = new URL('../../native/', import.meta.url);
const addon = existsSync(nativeDir) ? readdirSync(nativeDir).find((f) => /^skysync\..*\.node$/.test(f)) : undefined;
const digest = createHash('sha256').update(readFileSync('dist/agent.cjs'));
if (addon) digest.update(readFileSync(new URL(addon, nativeDir)));
const hash = digest.digest('hex').slice(0, 16);
writeFileSync('dist/agent.json', JSON.stringify({ file: 'agent.cjs', hash }) + '\n');
