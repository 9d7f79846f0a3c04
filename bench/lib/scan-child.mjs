// A fresh process that scans a tree with the native addon and prints one JSON line.
//   snapshot ROOT SNAP   scan without a previous tree and save the result to SNAP
//   rescan ROOT SNAP     load SNAP, scan with it (the real re-scan path)
//   mem ROOT SNAP|-      RSS per entry (run with --expose-gc); with SNAP the previous tree is loaded first

import { loadNativeAddon, nowMs } from './common.mjs';

const t0 = nowMs();
const [mode, root, snap] = process.argv.slice(2);
const native = loadNativeAddon();
const tAddon = nowMs() - t0;

const tick = () => new Promise((r) => setImmediate(r));

/** RSS after collecting garbage; the ticks let N-API finalizers (which free Rust trees) run. */
async function rss() {
  for (let i = 0; i < 3; i++) {
    globalThis.gc?.();
    await tick();
  }
  return process.memoryUsage().rss;
}

function out(o) {
  process.stdout.write(JSON.stringify(o) + '\n');
}

if (mode === 'snapshot') {
  const t = nowMs();
  const r = await native.scan(root, null);
  const scanMs = nowMs() - t;
  // Like a push: chunk every file and record its recipe, or the next scan reports the file again.
  const t1 = nowMs();
  const files = r.changes.filter((c) => c.entry.kind === 'file').map((c) => c.entry.path);
  let recorded = 0;
  const BATCH = 4096;
  for (let i = 0; i < files.length; i += BATCH) {
    const batch = files.slice(i, i + BATCH);
    const outcomes = await native.chunkFiles(root, batch);
    outcomes.forEach((o, k) => {
      if (o.error) throw new Error(`${batch[k]}: ${o.error}`);
      if (r.tree.setRecipe(batch[k], o.recipe.chunks)) recorded++;
    });
  }
  if (recorded !== files.length) throw new Error(`recorded ${recorded} of ${files.length} recipes`);
  const chunkMs = nowMs() - t1;
  const t2 = nowMs();
  r.tree.save(snap);
  out({ scanMs, chunkMs, saveMs: nowMs() - t2, stats: r.stats, changes: r.changes.length, warnings: r.warnings.length, treeSize: r.tree.size });
} else if (mode === 'rescan') {
  let t = nowMs();
  const prev = native.Tree.load(snap);
  const loadMs = nowMs() - t;
  t = nowMs();
  const r = await native.scan(root, prev);
  const scanMs = nowMs() - t;
  out({ addonMs: tAddon, loadMs, scanMs, inProcessMs: nowMs() - t0, stats: r.stats, changes: r.changes.length, warnings: r.warnings.length });
} else if (mode === 'mem') {
  if (!globalThis.gc) throw new Error('run with --expose-gc');
  const withPrev = snap && snap !== '-';
  // Warm the addon and its thread pool on a tiny scan so one-time costs do not count as per-entry memory.
  await native.scan(new URL('.', import.meta.url).pathname, null);
  const base = await rss();
  let prev = null;
  if (withPrev) prev = native.Tree.load(snap);
  const afterLoad = await rss();
  let r = await native.scan(root, prev);
  const entries = r.stats.entries;
  const changes = r.changes.length;
  const afterScan = await rss(); // result (tree + JS change objects) and previous tree alive
  const tree = r.tree;
  r = null;
  const afterDropChanges = await rss(); // new tree (+ previous) alive, JS change objects gone
  prev = null;
  const afterDropPrev = await rss(); // only the new tree alive
  if (tree.size !== entries) throw new Error(`tree size ${tree.size} != entries ${entries}`);
  out({ withPrev, entries, changes, base, afterLoad, afterScan, afterDropChanges, afterDropPrev, heapUsed: process.memoryUsage().heapUsed });
} else {
  throw new Error(`unknown mode ${mode}`);
}
