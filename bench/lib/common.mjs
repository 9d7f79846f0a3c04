// Shared helpers for the benchmarks: paths, timing, child processes, tables, result files.

import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(BENCH_DIR, '..');
export const NATIVE_INDEX = path.join(REPO, 'native', 'index.cjs');
export const CHUNKING_DIST = path.join(REPO, 'packages', 'chunking', 'dist', 'index.js');
export const CLI_BIN = path.join(REPO, 'packages', 'cli', 'dist', 'bin.js');
export const CACHE_ROOT = process.env.SKYSYNC_BENCH_DIR || '/tmp/skysync-bench';
export const RESULTS_DIR = path.join(BENCH_DIR, 'results');

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/**
 * The environment for child processes: the caller's, minus this sandbox's extra CA bundle, which node parses at
 * every start (tens of ms) although nothing here makes TLS connections.
 */
export function childEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

export function loadNativeAddon() {
  return createRequire(import.meta.url)(NATIVE_INDEX);
}

export function parseArgs(argv) {
  const flags = { smoke: false, keep: false, only: null };
  for (const a of argv) {
    if (a === '--smoke') flags.smoke = true;
    else if (a.startsWith('--only=')) flags.only = a.slice('--only='.length).split(',');
    else if (a === '--keep') flags.keep = true;
    else if (a === '-h' || a === '--help') flags.help = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return flags;
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

const T0 = Date.now();

export function log(msg) {
  process.stderr.write(`[bench +${((Date.now() - T0) / 1000).toFixed(1)}s] ${msg}\n`);
}

/**
 * Runs a command to completion and returns { ms, stdout, stderr, status }. Throws when it fails (non-zero exit,
 * signal, timeout) unless `allowFail`. stdout can be discarded to /dev/null with `discardStdout`.
 */
export function run(cmd, args, opts = {}) {
  const { env, cwd, timeoutMs = 480_000, discardStdout = false, allowFail = false, input } = opts;
  let devnull;
  const stdio = ['pipe', 'pipe', 'pipe'];
  if (discardStdout) {
    devnull = fs.openSync('/dev/null', 'w');
    stdio[1] = devnull;
  }
  const t0 = nowMs();
  const r = spawnSync(cmd, args, {
    env: env ?? childEnv(),
    cwd,
    stdio,
    input,
    timeout: timeoutMs,
    maxBuffer: 256 * MiB,
    encoding: 'utf8',
  });
  const ms = nowMs() - t0;
  if (devnull !== undefined) fs.closeSync(devnull);
  const res = { ms, stdout: r.stdout ?? '', stderr: r.stderr ?? '', status: r.status, signal: r.signal };
  if (!allowFail && (r.error || r.status !== 0)) {
    const why = r.error ? r.error.message : r.signal ? `signal ${r.signal}` : `exit ${r.status}`;
    throw new Error(`${cmd} ${args.join(' ')} failed (${why})\n${String(res.stderr).slice(-4000)}`);
  }
  return res;
}

/** Runs a node child script that prints one JSON line last on stdout; returns { ms, json }. */
export function runNodeJson(script, args, opts = {}) {
  const nodeArgs = [...(opts.nodeArgs ?? []), script, ...args];
  const r = run(process.execPath, nodeArgs, opts);
  const lines = r.stdout.trim().split('\n');
  let json;
  try {
    json = JSON.parse(lines[lines.length - 1]);
  } catch {
    throw new Error(`${script} ${args.join(' ')}: no JSON on stdout\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-2000)}`);
  }
  return { ms: r.ms, json, stderr: r.stderr };
}

/** `rm -rf`: much faster than fs.rmSync on trees of 100k files. */
export function rmrf(p) {
  if (!fs.existsSync(p)) return;
  const r = spawnSync('rm', ['-rf', '--', p], { stdio: 'ignore' });
  if (r.status !== 0 || fs.existsSync(p)) fs.rmSync(p, { recursive: true, force: true });
}

/** True when the built artifacts differ between two `buildInfo()` results (source edits alone do not count). */
export function buildChanged(a, b) {
  const keys = ['nativeAddon', 'agentBundle', 'cli', 'engine', 'chunking'];
  return keys.some((k) => a?.[k] !== b?.[k]);
}

/**
 * Removes `p` without waiting: renames it aside and leaves `rm -rf` running detached at idle I/O priority (deleting
 * 200k files on this disk takes minutes). `removeLeftovers` clears what is left before the next measurement.
 */
export function rmrfInBackground(p) {
  if (!fs.existsSync(p)) return;
  const trash = `${p}.trash-${process.pid}-${Date.now()}`;
  fs.renameSync(p, trash);
  const child = spawn('sh', ['-c', 'exec ionice -c3 nice -n 19 rm -rf -- "$1" 2>/dev/null || exec rm -rf -- "$1"', 'sh', trash], {
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
}

/** Synchronously removes `p` and any `p.trash-*` left by `rmrfInBackground` (waiting for a removal under way). */
export function removeLeftovers(p) {
  const dir = path.dirname(p);
  const base = path.basename(p);
  if (!fs.existsSync(dir)) return;
  for (const name of fs.readdirSync(dir)) {
    if (name !== base && !name.startsWith(`${base}.trash-`)) continue;
    const full = path.join(dir, name);
    log(`removing ${full} (left by an earlier run)`);
    for (let i = 0; i < 5 && fs.existsSync(full); i++) spawnSync('rm', ['-rf', '--', full], { stdio: 'ignore' });
    if (fs.existsSync(full)) fs.rmSync(full, { recursive: true, force: true });
  }
}

/** Which build was measured: the commit, how dirty the tree is, and when each artifact was built. */
export function buildInfo() {
  const mtime = (rel) => {
    try {
      return fs.statSync(path.join(REPO, rel)).mtime.toISOString();
    } catch {
      return null;
    }
  };
  const git = (...args) => {
    const r = spawnSync('git', ['-C', REPO, ...args], { encoding: 'utf8' });
    return r.status === 0 ? r.stdout.trim() : null;
  };
  const nativeNode = fs.readdirSync(path.join(REPO, 'native')).find((n) => n.endsWith('.node'));
  return {
    head: git('rev-parse', '--short', 'HEAD'),
    dirtyFiles: (git('status', '--porcelain', '--untracked-files=no') ?? '').split('\n').filter(Boolean).length,
    nativeAddon: nativeNode ? mtime(`native/${nativeNode}`) : null,
    agentBundle: mtime('packages/agent/dist/agent.cjs'),
    cli: mtime('packages/cli/dist/main.js'),
    engine: mtime('packages/engine/dist/push.js'),
    chunking: mtime('packages/chunking/dist/fallback.js'),
  };
}

/** Drops dirty pages to disk so writeback does not land inside a measurement. */
export function syncDisks() {
  run('sync', []);
}

export function fmtMs(ms) {
  if (!Number.isFinite(ms)) return 'n/a';
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`;
}

export function fmtBytes(b) {
  if (!Number.isFinite(b)) return 'n/a';
  if (b >= GiB) return `${(b / GiB).toFixed(2)} GiB`;
  if (b >= MiB) return `${(b / MiB).toFixed(2)} MiB`;
  if (b >= KiB) return `${(b / KiB).toFixed(1)} KiB`;
  return `${Math.round(b)} B`;
}

export function fmtRatio(x) {
  return Number.isFinite(x) ? `${x.toFixed(2)}x` : 'n/a';
}

export function fmtGBs(bytes, ms) {
  return `${(bytes / 1e9 / (ms / 1000)).toFixed(2)}`;
}

export function verdict(ok) {
  return ok ? 'met' : '**MISSED**';
}

/** A markdown table from a header row and rows of cells. */
export function table(header, rows) {
  const esc = (c) => String(c).replace(/\|/g, '\\|');
  const out = [`| ${header.map(esc).join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const r of rows) out.push(`| ${r.map(esc).join(' | ')} |`);
  return out.join('\n');
}

export function writeResults(name, data) {
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify(data, null, 2) + '\n');
  return file;
}

export function machineInfo() {
  const os = globalThis.process;
  return {
    node: os.version,
    platform: `${os.platform}-${os.arch}`,
    cpus: (() => {
      try {
        const cpus = require_os().cpus();
        return { count: cpus.length, model: cpus[0]?.model };
      } catch {
        return null;
      }
    })(),
    rsync: (() => {
      try {
        return run('rsync', ['--version']).stdout.split('\n')[0];
      } catch {
        return null;
      }
    })(),
    git: (() => {
      try {
        return run('git', ['--version']).stdout.trim();
      } catch {
        return null;
      }
    })(),
    date: new Date().toISOString(),
    build: buildInfo(),
  };
}

function require_os() {
  return createRequire(import.meta.url)('node:os');
}

function cpuTimes() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = line[3] + (line[4] ?? 0);
  return { idle, total: line.reduce((a, b) => a + b, 0) };
}

/** Fraction of all CPUs busy over `ms` (other people's work included). */
export async function cpuBusy(ms = 1000) {
  const a = cpuTimes();
  await new Promise((r) => setTimeout(r, ms));
  const b = cpuTimes();
  const total = b.total - a.total;
  return total > 0 ? 1 - (b.idle - a.idle) / total : 0;
}

/**
 * Waits (up to `maxMs`) until the machine is mostly idle, since other work skews every number here. Returns the
 * last busy fraction seen; the caller records it.
 */
export async function waitForQuiet({ maxMs = 60_000, threshold = 0.15 } = {}) {
  const t0 = nowMs();
  let busy = await cpuBusy();
  while (busy > threshold && nowMs() - t0 < maxMs) {
    log(`machine busy (${(busy * 100).toFixed(0)}% CPU used by other processes); waiting`);
    busy = await cpuBusy(2000);
  }
  if (busy > threshold) log(`still ${(busy * 100).toFixed(0)}% busy after ${(maxMs / 1000).toFixed(0)} s; measuring anyway (numbers will be noisy)`);
  return busy;
}

function ownJiffies() {
  // /proc/self/stat: fields after the command name; utime, stime, cutime, cstime are fields 14-17.
  const s = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
}

/**
 * Starts watching how much CPU other processes take; the returned function gives the fraction of the whole
 * machine they used meanwhile (this process and its waited-for children excluded).
 */
export function watchInterference() {
  const a = cpuTimes();
  const ownA = ownJiffies();
  return () => {
    const b = cpuTimes();
    const total = b.total - a.total;
    if (total <= 0) return 0;
    const busy = total - (b.idle - a.idle);
    return Math.max(0, (busy - (ownJiffies() - ownA)) / total);
  };
}
