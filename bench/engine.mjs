#!/usr/bin/env node
// End-to-end push benchmarks against rsync, local to local, on the same trees in the same run (alternating order,
// median of N):
//   1. no-op push of the 100k-file tree          skysync vs `rsync -a --delete SRC/ DST/`
//   2. 1 byte inserted in the middle of a 1 GiB file   skysync vs `rsync -a --no-whole-file SRC/ DST/`
//   3. a 1 GiB file copied to a new name with 1 MiB changed   (same rsync command)
// skysync runs as a user runs it: `node packages/cli/dist/bin.js push local:HOME -w SRC --json`, with
// SKYSYNC_STATE_DIR in a fresh directory per scenario, in its default environment: the scenario's first push
// leaves a warm agent (and a watch of the source) behind for the next ones, as it does for a user.
//
//   node bench/engine.mjs            full size
//   node bench/engine.mjs --smoke    tiny trees, one repetition (< 30 s)
//   --keep                           keep the scenario directories (default: removed at the end)
//   --only=noop,insert,copy          run only the scenarios whose names start with these
//
// Prints markdown tables on stdout, progress on stderr, writes bench/results/engine.json (engine-smoke.json).
// Exits non-zero when a step fails (not when a target is missed).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  CLI_BIN,
  childEnv,
  GiB,
  KiB,
  MiB,
  fmtBytes,
  fmtMs,
  fmtRatio,
  log,
  machineInfo,
  median,
  parseArgs,
  removeLeftovers,
  rmrfInBackground,
  run,
  syncDisks,
  table,
  verdict,
  buildChanged,
  buildInfo,
  watchInterference,
  waitForQuiet,
  writeResults,
} from './lib/common.mjs';
import { ensureData, insertByte, overwrite, writeRandomFile } from './lib/gen.mjs';

const flags = parseArgs(process.argv.slice(2));
if (flags.help) {
  process.stdout.write('usage: node bench/engine.mjs [--smoke] [--keep] [--only=noop,insert,copy]\n');
  process.exit(0);
}
const smoke = flags.smoke;
const profile = smoke ? 'smoke' : 'full';
const REPS = smoke ? 1 : 3;
const BIG = smoke ? 4 * MiB : 1 * GiB;
const CHANGE = smoke ? 64 * KiB : 1 * MiB;

/** The no-op is quick on both sides: more repetitions for a steadier median. */
const NOOP_REPS = smoke ? REPS : Math.max(REPS, 7);
const TARGETS = { noopSpeedup: 4, insertLiteralBytes: 100_000, insertSpeedup: 5, copyLiteralBytes: 2 * MiB };

const results = {
  name: `engine${smoke ? '-smoke' : ''}${flags.only ? `.only-${flags.only.join('-')}` : ''}`,
  smoke,
  machine: machineInfo(),
  targets: TARGETS,
  reps: REPS,
  scenarios: {},
  cpuBusyBefore: {},
  otherCpuDuring: {},
  failures: [],
};
const sections = [];

const data = ensureData(profile);
const work = path.join(data.root, 'engine-run');
removeLeftovers(work);
fs.mkdirSync(work, { recursive: true });

const baseEnv = childEnv();

function load() {
  return os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
}

/** Targets pushed to, for ending their warm agents at the end. */
const warmAgents = new Map();

function skyPush(src, home, stateDir) {
  warmAgents.set(`${home}\0${stateDir}`, { home, stateDir });
  const r = run(process.execPath, [CLI_BIN, 'push', `local:${home}`, '-w', src, '--json'], { env: { ...baseEnv, SKYSYNC_STATE_DIR: stateDir } });
  const lines = r.stdout.trim().split('\n');
  const stats = JSON.parse(lines[lines.length - 1]);
  if (stats.failed?.length) throw new Error(`skysync push reported failures: ${JSON.stringify(stats.failed).slice(0, 1000)}`);
  return { ms: r.ms, stats };
}

function parseRsyncStats(out) {
  const num = (label) => {
    const m = new RegExp(`^${label}: ([\\d,]+)`, 'm').exec(out);
    return m ? Number(m[1].replace(/,/g, '')) : null;
  };
  return {
    files: num('Number of files'),
    transferred: num('Number of regular files transferred'),
    literal: num('Literal data'),
    matched: num('Matched data'),
    sent: num('Total bytes sent'),
    received: num('Total bytes received'),
  };
}

function rsync(src, dst, extra) {
  const r = run('rsync', ['-a', ...extra, '--stats', `${src}/`, `${dst}/`], { env: baseEnv });
  return { ms: r.ms, stats: parseRsyncStats(r.stdout) };
}

function same(a, b) {
  const r = run('cmp', ['--silent', a, b], { allowFail: true });
  if (r.status !== 0) throw new Error(`${b} differs from ${a}`);
}

function countFiles(dir) {
  return Number(run('sh', ['-c', `find "${dir}" -type f | wc -l`]).stdout.trim());
}

/** Inserts one byte at `pos` in place (the tail moves up by one). */
function scenarioDirs(name) {
  const d = { root: path.join(work, name) };
  d.src = path.join(d.root, 'src');
  d.home = path.join(d.root, 'sky-home');
  d.state = path.join(d.root, 'sky-state');
  d.dst = path.join(d.root, 'rsync-dst');
  d.skyDest = path.join(d.home, 'sky_workdir');
  for (const k of ['src', 'home', 'state', 'dst']) fs.mkdirSync(d[k], { recursive: true });
  return d;
}

/** Runs `fns` in an order that alternates with the repetition. */
function alternate(rep, fns) {
  const order = rep % 2 === 0 ? fns : [...fns].reverse();
  for (const f of order) f();
}

async function scenario(name, fn) {
  if (flags.only && !flags.only.some((o) => name.startsWith(o))) return;
  const busy = smoke ? null : await waitForQuiet({ maxMs: 10_000 });
  results.cpuBusyBefore[name] = busy;
  log(`${name} (load ${load()}) ...`);
  const others = watchInterference();
  try {
    results.scenarios[name] = await fn();
  } catch (e) {
    log(`FAILED ${name}: ${e.stack ?? e}`);
    results.failures.push({ scenario: name, error: String(e.message ?? e) });
    sections.push(`### ${name}\n\n**step failed:** ${String(e.message ?? e).split('\n')[0]}\n`);
  }
  results.otherCpuDuring[name] = others();
}

const summary = [];

// ---------------------------------------------------------------------------------------------------------------
await scenario('noop', async () => {
  const d = scenarioDirs('noop');
  d.src = data.tree; // the cached 100k-file tree is only read
  const initSky = skyPush(d.src, d.home, d.state);
  const initRsync = rsync(d.src, d.dst, ['--delete']);
  log(`  initial: skysync ${fmtMs(initSky.ms)} (${initSky.stats.filesScanned} files), rsync ${fmtMs(initRsync.ms)}`);
  const synced = countFiles(d.skyDest);
  if (synced !== data.counts.synced) throw new Error(`skysync placed ${synced} files, expected ${data.counts.synced}`);
  // Untimed, as a user's second push: the first push after a full one starts the source's watch and has the kept
  // agent watch the destination; from the next push on both look only where something changed. (rsync has no
  // such state: its first repetition is as warm as its last.)
  const settle = [skyPush(d.src, d.home, d.state), skyPush(d.src, d.home, d.state)];
  log(`  settling pushes (untimed): ${settle.map((x) => `${fmtMs(x.ms)} (scan: ${x.stats.scan})`).join(', ')}`);
  const sky = [];
  const rs = [];
  let lastSky;
  let lastRsync;
  for (let rep = 0; rep < NOOP_REPS; rep++) {
    alternate(rep, [
      () => {
        lastSky = skyPush(d.src, d.home, d.state);
        if (lastSky.stats.filesChanged !== 0 || lastSky.stats.bytesLiteral !== 0)
          throw new Error(`no-op push changed ${lastSky.stats.filesChanged} files / ${lastSky.stats.bytesLiteral} literal bytes`);
        sky.push(lastSky);
      },
      () => {
        lastRsync = rsync(d.src, d.dst, ['--delete']);
        rs.push(lastRsync);
      },
    ]);
    log(`  rep ${rep + 1}: skysync ${fmtMs(lastSky.ms)}, rsync ${fmtMs(lastRsync.ms)}`);
  }
  const skyMs = median(sky.map((s) => s.ms));
  const rsMs = median(rs.map((s) => s.ms));
  const speedup = rsMs / skyMs;
  summary.push({
    scenario: `no-op push, ${lastSky.stats.filesScanned} files`,
    sky: skyMs,
    skyInner: median(sky.map((s) => s.stats.durationMs)),
    skyScan: median(sky.map((s) => s.stats.scanMs)),
    rsync: rsMs,
    speedup,
    literal: lastSky.stats.bytesLiteral,
    wire: lastSky.stats.bytesWire,
    rsyncLiteral: lastRsync.stats.literal,
    rsyncWire: lastRsync.stats.sent + lastRsync.stats.received,
    target: `>= ${TARGETS.noopSpeedup}x faster: ${verdict(speedup >= TARGETS.noopSpeedup)}`,
  });
  return { initSky, initRsync, settle, sky, rsync: rs, skyMs, rsyncMs: rsMs, speedup, met: speedup >= TARGETS.noopSpeedup };
});

// ---------------------------------------------------------------------------------------------------------------
await scenario('insert-1-byte', async () => {
  const d = scenarioDirs('insert');
  const file = path.join(d.src, 'big.bin');
  writeRandomFile(file, BIG, 'engine-insert');
  syncDisks();
  const initSky = skyPush(d.src, d.home, d.state);
  const initRsync = rsync(d.src, d.dst, ['--no-whole-file']);
  log(`  initial: skysync ${fmtMs(initSky.ms)}, rsync ${fmtMs(initRsync.ms)}`);
  const sky = [];
  const rs = [];
  for (let rep = 0; rep < REPS; rep++) {
    const size = fs.statSync(file).size;
    insertByte(file, Math.floor(size / 2), 0x41 + rep);
    syncDisks();
    log(`  rep ${rep + 1}: byte inserted, disks synced`);
    alternate(rep, [() => sky.push(skyPush(d.src, d.home, d.state)), () => rs.push(rsync(d.src, d.dst, ['--no-whole-file']))]);
    log(`  rep ${rep + 1}: skysync ${fmtMs(sky.at(-1).ms)} (${fmtBytes(sky.at(-1).stats.bytesLiteral)} literal), rsync ${fmtMs(rs.at(-1).ms)}`);
    same(file, path.join(d.skyDest, 'big.bin'));
    same(file, path.join(d.dst, 'big.bin'));
  }
  const skyMs = median(sky.map((s) => s.ms));
  const rsMs = median(rs.map((s) => s.ms));
  const speedup = rsMs / skyMs;
  const literal = median(sky.map((s) => s.stats.bytesLiteral));
  const met = literal <= TARGETS.insertLiteralBytes && speedup >= TARGETS.insertSpeedup;
  summary.push({
    scenario: `1 byte inserted in the middle of a ${fmtBytes(BIG)} file`,
    sky: skyMs,
    skyInner: median(sky.map((s) => s.stats.durationMs)),
    skyScan: median(sky.map((s) => s.stats.scanMs)),
    rsync: rsMs,
    speedup,
    literal,
    wire: median(sky.map((s) => s.stats.bytesWire)),
    rsyncLiteral: median(rs.map((s) => s.stats.literal)),
    rsyncWire: median(rs.map((s) => s.stats.sent + s.stats.received)),
    target:
      `literal <= ${fmtBytes(TARGETS.insertLiteralBytes)}: ${verdict(literal <= TARGETS.insertLiteralBytes)}; ` +
      `>= ${TARGETS.insertSpeedup}x faster: ${verdict(speedup >= TARGETS.insertSpeedup)}`,
  });
  return { initSky, initRsync, sky, rsync: rs, skyMs, rsyncMs: rsMs, speedup, literal, met };
});

// ---------------------------------------------------------------------------------------------------------------
await scenario('copy-1MiB-changed', async () => {
  const d = scenarioDirs('copy');
  const base = path.join(d.src, 'base.bin');
  writeRandomFile(base, BIG, 'engine-copy-base');
  syncDisks();
  const initSky = skyPush(d.src, d.home, d.state);
  const initRsync = rsync(d.src, d.dst, ['--no-whole-file']);
  log(`  initial: skysync ${fmtMs(initSky.ms)}, rsync ${fmtMs(initRsync.ms)}`);
  const sky = [];
  const rs = [];
  for (let rep = 0; rep < REPS; rep++) {
    const name = `copy-${rep}.bin`;
    const copy = path.join(d.src, name);
    fs.copyFileSync(base, copy);
    // A different, unaligned region each time.
    const pos = Math.floor(BIG * (0.15 + 0.3 * rep)) + 12345;
    overwrite(copy, pos, CHANGE, `engine-copy-change-${rep}`);
    syncDisks();
    log(`  rep ${rep + 1}: copy made, disks synced`);
    alternate(rep, [() => sky.push(skyPush(d.src, d.home, d.state)), () => rs.push(rsync(d.src, d.dst, ['--no-whole-file']))]);
    log(`  rep ${rep + 1}: skysync ${fmtMs(sky.at(-1).ms)} (${fmtBytes(sky.at(-1).stats.bytesLiteral)} literal), rsync ${fmtMs(rs.at(-1).ms)}`);
    same(copy, path.join(d.skyDest, name));
    same(copy, path.join(d.dst, name));
    // Back to the base state on both sides (untimed).
    fs.rmSync(copy);
    skyPush(d.src, d.home, d.state);
    rsync(d.src, d.dst, ['--delete']);
    if (fs.existsSync(path.join(d.skyDest, name))) throw new Error(`skysync did not remove ${name} on the remote`);
    log(`  rep ${rep + 1}: verified and reset`);
  }
  const skyMs = median(sky.map((s) => s.ms));
  const rsMs = median(rs.map((s) => s.ms));
  const speedup = rsMs / skyMs;
  const literal = median(sky.map((s) => s.stats.bytesLiteral));
  summary.push({
    scenario: `${fmtBytes(BIG)} file copied to a new name, ${fmtBytes(CHANGE)} changed`,
    sky: skyMs,
    skyInner: median(sky.map((s) => s.stats.durationMs)),
    skyScan: median(sky.map((s) => s.stats.scanMs)),
    rsync: rsMs,
    speedup,
    literal,
    wire: median(sky.map((s) => s.stats.bytesWire)),
    rsyncLiteral: median(rs.map((s) => s.stats.literal)),
    rsyncWire: median(rs.map((s) => s.stats.sent + s.stats.received)),
    target: `literal <= ${fmtBytes(TARGETS.copyLiteralBytes)}: ${verdict(literal <= TARGETS.copyLiteralBytes)}`,
  });
  return { initSky, initRsync, sky, rsync: rs, skyMs, rsyncMs: rsMs, speedup, literal, met: literal <= TARGETS.copyLiteralBytes };
});

// ---------------------------------------------------------------------------------------------------------------
results.summary = summary;
const pct = (v) => (v === null || v === undefined ? 'n/a' : `${(v * 100).toFixed(0)}%`);
results.buildAtEnd = buildInfo();
const rebuilt = buildChanged(results.buildAtEnd, results.machine.build);
const header =
  `## skysync push vs rsync, local to local${smoke ? ' (smoke)' : ''} (median of ${REPS}, alternating order, warm page cache)\n\n` +
  `${results.machine.cpus?.count ?? '?'} × ${results.machine.cpus?.model ?? 'cpu'}, node ${results.machine.node}, ${results.machine.rsync}, build ${results.machine.build.head} (+${results.machine.build.dirtyFiles} modified files). ` +
  'skysync: `node packages/cli/dist/bin.js push local:HOME -w SRC --json` (wall time of the whole command; "in-process" is its durationMs, "scan" its scanMs). ' +
  'rsync: `rsync -a --delete` for the no-op, `rsync -a --no-whole-file` for the large files (plus `--stats` to read the literal bytes); ' +
  'rsync gets no ignore filter, so on the no-op it also walks the ~4% of ignored files skysync skips. Every result is checked (`cmp`, file counts).\n';
const rows = summary.map((s) => [
  s.scenario,
  `${fmtMs(s.sky)} (in-process ${fmtMs(s.skyInner)}, scan ${fmtMs(s.skyScan)})`,
  fmtMs(s.rsync),
  fmtRatio(s.speedup),
  `${fmtBytes(s.literal)} / ${fmtBytes(s.wire)}`,
  `${fmtBytes(s.rsyncLiteral)} / ${fmtBytes(s.rsyncWire)}`,
  s.target,
]);
const initRows = Object.entries(results.scenarios).map(([name, r]) => [
  name,
  `${fmtMs(r.initSky.ms)} (${fmtBytes(r.initSky.stats.bytesLiteral)} literal, ${fmtBytes(r.initSky.stats.bytesWire)} wire)`,
  fmtMs(r.initRsync.ms),
]);
process.stdout.write(
  [
    header,
    table(['scenario', 'skysync', 'rsync', 'rsync / skysync', 'skysync literal / wire', 'rsync literal / sent+received', 'target'], rows),
    '',
    '### Initial pushes (one sample each, empty destination, for context)\n',
    table(['scenario', 'skysync', 'rsync'], initRows),
    '',
    ...sections,
    rebuilt ? '\n**Warning:** the build changed during this run (someone rebuilt); the numbers may mix two builds. Re-run.' : '',
    `\nCPU taken by other processes and kernel threads on this shared machine (share of both cores; above ~10% the numbers are noisy): ${Object.keys(results.otherCpuDuring)
      .map((k) => `${k} ${pct(results.cpuBusyBefore[k])} before / ${pct(results.otherCpuDuring[k])} during`)
      .join(', ')}.`,
  ].join('\n') + '\n',
);
const out = writeResults(results.name, results);
log(`wrote ${out}`);
// Each scenario's first push left a warm agent behind (the default, as a user gets it); end them all.
for (const { home, stateDir } of warmAgents.values()) {
  run(process.execPath, [CLI_BIN, 'disconnect', `local:${home}`], { env: { ...baseEnv, SKYSYNC_STATE_DIR: stateDir }, allowFail: true });
}
if (!flags.keep) rmrfInBackground(work);
if (results.failures.length) {
  log(`${results.failures.length} scenario(s) failed: ${results.failures.map((f) => f.scenario).join(', ')}`);
  process.exitCode = 1;
}
