#!/usr/bin/env node
// The habits CI holds the code to: TypeScript formatting and lint (Biome), Rust formatting and clippy with
// warnings as errors. Installs the dependencies first on a fresh clone (Biome comes from them); builds nothing.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pnpmCommand } from './setup.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const native = path.join(root, 'native');
const failed = [];

function run(label, cmd, args, cwd) {
  process.stderr.write(`\n$ ${[cmd, ...args].join(' ')}\n`);
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit' });
  if (r.error) process.stderr.write(`check: ${label}: ${r.error.message}\n`);
  if (r.status !== 0) failed.push(label);
  return r.status === 0;
}

const [pnpm, ...pnpmPre] = pnpmCommand();
if (!fs.existsSync(path.join(root, 'node_modules', '.bin', 'biome'))) {
  if (!run('install', pnpm, [...pnpmPre, 'install', '--frozen-lockfile', '--reporter=append-only'], root)) process.exit(1);
}
// Every check runs even after one fails, so one CI run lists every kind of problem.
run('lint (pnpm format fixes the formatting)', pnpm, [...pnpmPre, 'run', 'lint'], root);
run('cargo fmt (cargo fmt in native/ fixes it)', 'cargo', ['fmt', '--all', '--check'], native);
run('cargo clippy', 'cargo', ['clippy', '--release', '--workspace', '--all-targets', '--', '-D', 'warnings'], native);
if (failed.length > 0) {
  process.stderr.write(`\ncheck: failed: ${failed.join('; ')}\n`);
  process.exit(1);
}
process.stderr.write('\ncheck: all clean\n');
