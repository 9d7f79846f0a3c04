#!/usr/bin/env node
// Core benchmarks of the native addon (and the TypeScript fallback): re-scan of an unchanged tree against find and
// git status, chunk + hash throughput, the chunk-size trade-off, and resident memory per scanned entry.
//
//   node bench/core.mjs            full size: >= 100k files + >= 1 GB of large files (generated once, cached)
//   node bench/core.mjs --smoke    a tiny tree, one repetition, every code path (< 30 s)
//   --only=rescan,native,chunk,fallback,memory   run only the steps whose names start with these
//
// Prints markdown tables on stdout, progress on stderr, and writes bench/results/core.json (core-smoke.json).
// Exits non-zero when a step fails (not when a target is missed).

import fs from 'node:fs';
import path from 'node:path';
import {
  BENCH_DIR,
  childEnv,
  MiB,
  fmtBytes,
  fmtMs,
  fmtRatio,
  log,
  machineInfo,
  median,
  parseArgs,
  rmrf,
  run,
  runNodeJson,
  table,
  verdict,
  buildChanged,
  buildInfo,
  watchInterference,
  waitForQuiet,
  writeResults,
} from './lib/common.mjs';
import { ensureData, git, gitArgs } from './lib/gen.mjs';

const flags = parseArgs(process.argv.slice(2));
if (flags.help) {
  process.stdout.write('usage: node bench/core.mjs [--smoke] [--only=rescan,native,chunk,fallback,memory]\n');
  process.exit(0);
}
const smoke = flags.smoke;
const profile = smoke ? 'smoke' : 'full';
const SCAN_REPS = smoke ? 1 : 5;
const CHUNK_REPS = smoke ? 1 : 3;
const BUF = smoke ? 4 * MiB : 256 * MiB;
const SCAN_CHILD = path.join(BENCH_DIR, 'lib', 'scan-child.mjs');
const CHUNK_CHILD = path.join(BENCH_DIR, 'lib', 'chunk-child.mjs');

const TARGETS = { scanVsFind: 1.5, nativeGBsPerCore: 1.5, largeFileGBs: 1.5, fallbackGBs: 0.3, bytesPerEntry: 150 };

const results = {
  name: `core${smoke ? '-smoke' : ''}${flags.only ? `.only-${flags.only.join('-')}` : ''}`,
  smoke,
  machine: machineInfo(),
  targets: TARGETS,
  steps: {},
  cpuBusyBefore: {},
  otherCpuDuring: {},
  failures: [],
};
const sections = [];

async function step(name, fn) {
  if (flags.only && !flags.only.some((o) => name.startsWith(o))) return;
  const busy = smoke ? null : await waitForQuiet({ maxMs: 20_000 });
  results.cpuBusyBefore[name] = busy;
  log(`${name} ...`);
  const others = watchInterference();
  try {
    results.steps[name] = await fn();
  } catch (e) {
    log(`FAILED ${name}: ${e.stack ?? e}`);
    results.failures.push({ step: name, error: String(e.message ?? e) });
    sections.push(`### ${name}\n\n**step failed:** ${String(e.message ?? e).split('\n')[0]}\n`);
  }
  results.otherCpuDuring[name] = others();
}

const gbs = (bytes, ms) => bytes / 1e9 / (ms / 1000);

const data = ensureData(profile);
results.data = { tree: data.tree, large: data.large, counts: data.counts };
const snap = path.join(data.root, 'bench-previous.snap');

// ---------------------------------------------------------------------------------------------------------------
await step('rescan', async () => {
  // Warm the page cache and settle git's index (racily clean entries are rehashed until the index is rewritten).
  run('find', [data.tree, '-printf', '%s %T@ %i %m\\n'], { discardStdout: true });
  git(data, ['update-index', '-q', '--refresh'], { allowFail: true });
  git(data, ['-c', 'core.untrackedCache=false', 'status', '--porcelain']);
  rmrf(snap);
  const first = runNodeJson(SCAN_CHILD, ['snapshot', data.tree, snap]);
  const snapBytes = fs.statSync(snap).size;
  log(
    `  first scan: ${first.json.stats.entries} entries (${first.json.stats.files} files, ${first.json.stats.dirs} dirs, ${first.json.stats.symlinks} symlinks, ${first.json.stats.ignored} ignored) in ${fmtMs(first.json.scanMs)}; snapshot ${fmtBytes(snapBytes)}`,
  );

  const m = { scan: [], scanInner: [], addon: [], load: [], find: [], git: [], node: [] };
  const kinds = ['scan', 'find', 'git', 'node'];
  let lastStats;
  for (let rep = 0; rep < SCAN_REPS; rep++) {
    // Rotate the order so no command always runs right after another.
    for (let k = 0; k < kinds.length; k++) {
      const kind = kinds[(k + rep) % kinds.length];
      if (kind === 'scan') {
        const r = runNodeJson(SCAN_CHILD, ['rescan', data.tree, snap]);
        if (r.json.changes !== 0) throw new Error(`re-scan of the unchanged tree reported ${r.json.changes} changes`);
        m.scan.push(r.ms);
        m.scanInner.push(r.json.scanMs);
        m.addon.push(r.json.addonMs);
        m.load.push(r.json.loadMs);
        lastStats = r.json.stats;
      } else if (kind === 'find') {
        m.find.push(run('find', [data.tree, '-printf', '%s %T@ %i %m\\n'], { discardStdout: true }).ms);
      } else if (kind === 'git') {
        const r = run('git', gitArgs(data, '-c', 'core.untrackedCache=false', 'status', '--porcelain'));
        if (r.stdout.trim() !== '') throw new Error(`git status is not clean:\n${r.stdout.slice(0, 500)}`);
        m.git.push(r.ms);
      } else {
        m.node.push(run(process.execPath, ['-e', '0']).ms);
      }
    }
  }
  const med = Object.fromEntries(Object.entries(m).map(([k, v]) => [k, median(v)]));
  const ratio = med.scan / med.find;
  const ratioInner = med.scanInner / med.find;
  const mm = (xs) => `${fmtMs(Math.min(...xs))} – ${fmtMs(Math.max(...xs))}`;
  const rows = [
    ['skysync re-scan: fresh `node`, load addon, `Tree.load`, `scan(root, prev)`', fmtMs(med.scan), mm(m.scan), fmtRatio(ratio)],
    ['  of which: load the addon', fmtMs(med.addon), mm(m.addon), ''],
    ['  of which: `Tree.load` of the previous snapshot', fmtMs(med.load), mm(m.load), ''],
    ['  of which: `scan()` itself (in process)', fmtMs(med.scanInner), mm(m.scanInner), fmtRatio(ratioInner)],
    ["`find TREE -printf '%s %T@ %i %m\\n' > /dev/null`", fmtMs(med.find), mm(m.find), '1.00x'],
    ['`git -c core.untrackedCache=false status --porcelain`', fmtMs(med.git), mm(m.git), fmtRatio(med.git / med.find)],
    ['`node -e 0` (process start floor)', fmtMs(med.node), mm(m.node), fmtRatio(med.node / med.find)],
  ];
  sections.push(
    `### Re-scan of the unchanged tree (warm page cache, median of ${SCAN_REPS})\n\n` +
      `Tree: ${lastStats.entries} entries (${lastStats.files} files, ${lastStats.dirs} dirs, ${lastStats.symlinks} symlinks) after ` +
      `${lastStats.ignored} ignored paths; ${fmtBytes(lastStats.bytes)}; previous snapshot ${fmtBytes(snapBytes)}.\n\n` +
      table(['command', 'median', 'min – max', 'vs find'], rows) +
      `\n\nscan/find (whole process): **${fmtRatio(ratio)}** (target <= ${TARGETS.scanVsFind}x): ${verdict(ratio <= TARGETS.scanVsFind)}; ` +
      `in-process scan()/find: ${fmtRatio(ratioInner)}.\n`,
  );
  return { samples: m, medians: med, ratio, ratioInner, stats: lastStats, firstScan: first.json, snapshotBytes: snapBytes, met: ratio <= TARGETS.scanVsFind };
});

// ---------------------------------------------------------------------------------------------------------------
const throughputRows = [];
let paramsJson;
await step('native-throughput', async () => {
  run('cat', data.large, { discardStdout: true }); // warm the page cache
  const files = data.large;
  const out = {};
  const env = (threads) => childEnv({ RAYON_NUM_THREADS: String(threads) });
  out.each1 = runNodeJson(CHUNK_CHILD, ['files', String(CHUNK_REPS), 'each', ...files], { env: env(1) }).json;
  out.each2 = runNodeJson(CHUNK_CHILD, ['files', String(CHUNK_REPS), 'each', ...files], { env: env(2) }).json;
  out.all2 = runNodeJson(CHUNK_CHILD, ['files', String(CHUNK_REPS), 'all', ...files], { env: env(2) }).json;
  // The largest file alone: chunked in segments on every core (native/core/src/chunk/parallel.rs).
  const largest = files.reduce((a, b) => (fs.statSync(b).size > fs.statSync(a).size ? b : a));
  run('cat', [largest], { discardStdout: true });
  out.large2 = runNodeJson(CHUNK_CHILD, ['files', String(CHUNK_REPS), 'each', largest], { env: env(2) }).json;
  paramsJson = runNodeJson(CHUNK_CHILD, ['params', String(BUF), String(CHUNK_REPS)], { env: env(1) }).json;
  out.params = paramsJson;
  out.workers2 = runNodeJson(CHUNK_CHILD, ['workers', String(BUF), String(CHUNK_REPS), '2'], { env: env(1) }).json;
  const def = paramsJson.rows.find((r) => r.params.avgSize === paramsJson.defaultParams.avgSize) ?? paramsJson.rows[1];
  const total = files.reduce((s, f) => s + fs.statSync(f).size, 0);
  const row = (what, threads, bytes, ms) => {
    const g = gbs(bytes, ms);
    return { what, threads, bytes, ms, gbs: g, perCore: g / threads };
  };
  const rows = [
    row(`chunkBuffer, ${fmtBytes(BUF)} in memory`, 1, BUF, def.chunkMs),
    row(`chunkFiles, one file per call, RAYON_NUM_THREADS=1 (${files.length} files, ${fmtBytes(total)})`, 1, out.each1.bytes, out.each1.ms),
    row('chunkFiles, one file per call, RAYON_NUM_THREADS=2', 2, out.each2.bytes, out.each2.ms),
    row('chunkFiles, all files in one call, RAYON_NUM_THREADS=2', 2, out.all2.bytes, out.all2.ms),
    row(`chunkFiles, the largest file alone (${fmtBytes(out.large2.bytes)}), RAYON_NUM_THREADS=2`, 2, out.large2.bytes, out.large2.ms),
    row(`chunkBuffer in 2 worker threads at once (${fmtBytes(BUF)} each)`, 2, out.workers2.bytes, out.workers2.ms),
    row('cutPoints only (FastCDC, no BLAKE3), in memory', 1, BUF, def.cutMs),
  ];
  throughputRows.push(...rows);
  const single = Math.min(rows[0].perCore, rows[1].perCore);
  const dual = Math.max(rows[2].perCore, rows[3].perCore, rows[5].perCore);
  const largeGBs = rows[4].gbs;
  sections.push(
    `### Native chunk + hash throughput (FastCDC ${def.params.minSize / 1024}K/${def.params.avgSize / 1024}K/${def.params.maxSize / 1024}K + BLAKE3, warm page cache, median of ${CHUNK_REPS})\n\n` +
      table(
        ['what', 'threads', 'bytes', 'median time', 'GB/s', 'GB/s per core'],
        rows.map((r) => [r.what, r.threads, fmtBytes(r.bytes), fmtMs(r.ms), r.gbs.toFixed(2), r.perCore.toFixed(2)]),
      ) +
      `\n\nSingle thread: **${single.toFixed(2)} GB/s per core** (target >= ${TARGETS.nativeGBsPerCore}): ${verdict(single >= TARGETS.nativeGBsPerCore)}; ` +
      `best with 2 threads: ${dual.toFixed(2)} GB/s per core; one large file on both cores: **${largeGBs.toFixed(2)} GB/s** wall ` +
      `(target >= ${TARGETS.largeFileGBs}): ${verdict(largeGBs >= TARGETS.largeFileGBs)}.\n`,
  );
  return { ...out, rows, singlePerCore: single, dualPerCore: dual, largeFileGBs: largeGBs, met: single >= TARGETS.nativeGBsPerCore };
});

// ---------------------------------------------------------------------------------------------------------------
await step('chunk-params', async () => {
  if (!paramsJson) throw new Error('no parameter sweep (native-throughput failed)');
  const p = paramsJson;
  const rows = p.rows.map((r) => [
    `${r.params.avgSize / 1024}K (${r.params.minSize / 1024}K/${r.params.maxSize / 1024}K)${r.params.avgSize === p.defaultParams.avgSize ? ' **default**' : ''}`,
    gbs(p.size, r.chunkMs).toFixed(2),
    gbs(p.size, r.cutMs).toFixed(2),
    fmtBytes(r.meanChunk),
    `${r.chunks} / ${fmtBytes(r.recipeBytes)}`,
    `${fmtBytes(r.insertMidNewBytes)} (${r.insertMidNewChunks} chunks)`,
    `${fmtBytes(r.insertSpreadNewBytesPerInsert)} (${r.insertSpreadNewChunksPerInsert.toFixed(2)} chunks)`,
  ]);
  sections.push(
    `### Chunk parameters (min = avg/4, max = avg*4), ${fmtBytes(p.size)} random buffer, 1 thread\n\n` +
      table(
        [
          'average',
          'chunk + hash GB/s',
          'cut only GB/s',
          'mean chunk',
          `chunks / recipe bytes (36 B each) per ${fmtBytes(p.size)}`,
          '1 byte inserted in the middle: new bytes',
          `mean over ${p.inserts} inserts spread over the buffer`,
        ],
        rows,
      ) +
      '\n',
  );
  return p;
});

// ---------------------------------------------------------------------------------------------------------------
await step('fallback-throughput', async () => {
  const r = runNodeJson(CHUNK_CHILD, ['fallback', String(BUF), String(CHUNK_REPS)]).json;
  const g = gbs(r.bytes, r.ms);
  if (!r.matchesNative) throw new Error('the TypeScript fallback recipe differs from the native one on the same buffer');
  sections.push(
    `### TypeScript fallback chunk + hash (createFallbackChunker().chunkBuffer, ${fmtBytes(r.bytes)} in memory, median of ${CHUNK_REPS})\n\n` +
      table(['what', 'median time', 'GB/s', 'same recipe as native'], [['fallback chunkBuffer', fmtMs(r.ms), g.toFixed(2), r.matchesNative ? 'yes' : '**NO**']]) +
      `\n\nFallback: **${g.toFixed(2)} GB/s** (target >= ${TARGETS.fallbackGBs}): ${verdict(g >= TARGETS.fallbackGBs)}.\n`,
  );
  return { ...r, gbs: g, met: g >= TARGETS.fallbackGBs };
});

// ---------------------------------------------------------------------------------------------------------------
await step('memory', async () => {
  if (!fs.existsSync(snap)) runNodeJson(SCAN_CHILD, ['snapshot', data.tree, snap]);
  const without = runNodeJson(SCAN_CHILD, ['mem', data.tree, '-'], { nodeArgs: ['--expose-gc'] }).json;
  const withPrev = runNodeJson(SCAN_CHILD, ['mem', data.tree, snap], { nodeArgs: ['--expose-gc'] }).json;
  const per = (a, b, n) => (b - a) / n;
  const w = withPrev;
  const n0 = without;
  const scanWith = per(w.afterLoad, w.afterScan, w.entries);
  const scanWithout = per(n0.base, n0.afterScan, n0.entries);
  const rows = [
    [
      'no previous tree: RSS before → after `scan()` (result held: tree + JS change objects)',
      n0.entries,
      `${fmtBytes(n0.base)} → ${fmtBytes(n0.afterScan)}`,
      `${scanWithout.toFixed(0)} B`,
    ],
    [
      '  same, after dropping the JS change objects (tree only)',
      n0.entries,
      `${fmtBytes(n0.base)} → ${fmtBytes(n0.afterDropChanges)}`,
      `${per(n0.base, n0.afterDropChanges, n0.entries).toFixed(0)} B`,
    ],
    ['previous snapshot: RSS before → after `Tree.load`', w.entries, `${fmtBytes(w.base)} → ${fmtBytes(w.afterLoad)}`, `${per(w.base, w.afterLoad, w.entries).toFixed(0)} B`],
    [
      'previous snapshot loaded: RSS before → after `scan(root, prev)` (the real case)',
      w.entries,
      `${fmtBytes(w.afterLoad)} → ${fmtBytes(w.afterScan)}`,
      `${scanWith.toFixed(0)} B`,
    ],
    ['  total with both trees alive (from before `Tree.load`)', w.entries, `${fmtBytes(w.base)} → ${fmtBytes(w.afterScan)}`, `${per(w.base, w.afterScan, w.entries).toFixed(0)} B`],
    [
      '  after dropping the previous tree (new tree only)',
      w.entries,
      `${fmtBytes(w.base)} → ${fmtBytes(w.afterDropPrev)}`,
      `${per(w.base, w.afterDropPrev, w.entries).toFixed(0)} B`,
    ],
  ];
  const worst = Math.max(scanWith, scanWithout);
  sections.push(
    `### Resident memory per scanned entry (fresh process, --expose-gc, RSS after gc)\n\n` +
      table(['case', 'entries', 'RSS', 'per entry'], rows) +
      `\n\nScan with the previous snapshot: **${scanWith.toFixed(0)} B/entry**, without: ${scanWithout.toFixed(0)} B/entry ` +
      `(target <= ${TARGETS.bytesPerEntry}): with previous ${verdict(scanWith <= TARGETS.bytesPerEntry)}, without ${verdict(scanWithout <= TARGETS.bytesPerEntry)}.\n`,
  );
  return { without, withPrev, scanWithPerEntry: scanWith, scanWithoutPerEntry: scanWithout, worst, met: scanWith <= TARGETS.bytesPerEntry && scanWithout <= TARGETS.bytesPerEntry };
});

// ---------------------------------------------------------------------------------------------------------------
const header =
  `## skysync core benchmarks${smoke ? ' (smoke)' : ''}\n\n` +
  `${results.machine.cpus?.count ?? '?'} × ${results.machine.cpus?.model ?? 'cpu'}, node ${results.machine.node}, ${results.machine.git}, build ${results.machine.build.head} (+${results.machine.build.dirtyFiles} modified files). ` +
  `Data: ${data.tree} (${data.counts.synced} synced + ${data.counts.ignored} ignored files, ${data.counts.dirs} dirs), ` +
  `${data.large.length} large random files (${fmtBytes(data.large.reduce((s, f) => s + fs.statSync(f).size, 0))}) in ${path.dirname(data.large[0])}.\n`;
const pct = (v) => (v === null || v === undefined ? 'n/a' : `${(v * 100).toFixed(0)}%`);
const busyNote = `\nCPU taken by other processes and kernel threads on this shared machine (share of both cores; above ~10% the numbers are noisy): ${Object.keys(
  results.otherCpuDuring,
)
  .map((k) => `${k} ${pct(results.cpuBusyBefore[k])} before / ${pct(results.otherCpuDuring[k])} during`)
  .join(', ')}.\n`;
results.buildAtEnd = buildInfo();
const buildNote = !buildChanged(results.buildAtEnd, results.machine.build)
  ? ''
  : '\n**Warning:** the build changed during this run (someone rebuilt); the numbers may mix two builds. Re-run.\n';
process.stdout.write([header, ...sections, busyNote, buildNote].join('\n') + '\n');
const file = writeResults(results.name, results);
log(`wrote ${file}`);
if (results.failures.length) {
  log(`${results.failures.length} step(s) failed: ${results.failures.map((f) => f.step).join(', ')}`);
  process.exitCode = 1;
}
