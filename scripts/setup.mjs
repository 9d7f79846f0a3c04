#!/usr/bin/env node
// Sets up a fresh checkout: pnpm (pinned, through npx when it is not installed), dependencies, the native
// addon (cargo), the TypeScript packages and the agent bundle. Needs only Node >= 20, npm and a Rust toolchain.
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PNPM = '10.34.9';

function fail(msg) {
  process.stderr.write(`setup: ${msg}\n`);
  process.exit(1);
}

const major = Number(process.versions.node.split('.')[0]);
if (major < 20) fail(`Node ${process.versions.node} is too old; install Node 20 or newer`);
if (spawnSync('cargo', ['--version'], { stdio: 'ignore' }).status !== 0) {
  fail('cargo not found; install a Rust toolchain (https://rustup.rs) and retry');
}

export function pnpmCommand() {
  const r = spawnSync('pnpm', ['--version'], { encoding: 'utf8' });
  if (r.status === 0 && r.stdout.trim() === PNPM) return ['pnpm'];
  return ['npx', '-y', `pnpm@${PNPM}`];
}

export function pnpm(args, opts = {}) {
  const [cmd, ...pre] = pnpmCommand();
  const r = spawnSync(cmd, [...pre, ...args], { cwd: root, stdio: 'inherit', ...opts });
  if (r.status !== 0) fail(`\`pnpm ${args.join(' ')}\` failed (exit ${r.status})`);
}

export function setup() {
  const t0 = Date.now();
  pnpm(['install', '--frozen-lockfile', '--reporter=append-only']);
  pnpm(['run', 'build']);
  process.stderr.write(`setup: ready in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  setup();
  void execFileSync;
}
