#!/usr/bin/env node
// Runs every test: the Rust core's (cargo test), then the TypeScript and end-to-end tests (vitest).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
function run(cmd, args, cwd) {
  process.stderr.write(`\n$ ${cmd} ${args.join(' ')}\n`);
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
run('cargo', ['test', '--release', '--workspace'], path.join(root, 'native'));
run(path.join(root, 'node_modules', '.bin', 'vitest'), ['run', ...process.argv.slice(2)], root);
