#!/usr/bin/env node
import fs from 'node:fs';

// The bundled CLI starts faster; it is used when it is at least as new as the compiled sources (a `tsc -b`
// without `pnpm build` must not run a stale bundle).
function bundleIsFresh(): boolean {
  try {
    return fs.statSync(new URL('./skysync.mjs', import.meta.url)).mtimeMs >= fs.statSync(new URL('./main.js', import.meta.url)).mtimeMs;
  } catch {
    return false;
  }
}

const entry = bundleIsFresh() ? './skysync.mjs' : './main.js';
const { run } = (await import(entry)) as typeof import('./main.js');
process.exitCode = await run(process.argv.slice(2));
