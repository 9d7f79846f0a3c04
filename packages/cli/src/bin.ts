#!/usr/bin/env node
import fs from 'node:fs';
import { createRequire } from 'node:module';

// The bundled CLI starts faster; it is used when it is at least as new as the compiled sources (a `tsc -b`
// without `pnpm build` must not run a stale bundle). It is CommonJS: node 20 loads one large file ~20 ms faster
// through `require` than as an ES module.
function bundleIsFresh(): boolean {
  try {
    return fs.statSync(new URL('./skysync.cjs', import.meta.url)).mtimeMs >= fs.statSync(new URL('./main.js', import.meta.url)).mtimeMs;
  } catch {
    return false;
  }
}

type Main = typeof import('./main.js');
const { run }: Main = bundleIsFresh() ? (createRequire(import.meta.url)('./skysync.cjs') as Main) : await import('./main.js');
process.exitCode = await run(process.argv.slice(2));
