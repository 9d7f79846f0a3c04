// A fresh process measuring chunk + hash throughput; prints one JSON line.
//   files REPS MODE FILE...     native chunkFiles; MODE each = one file per call, all = one call for all files
//                               (threads come from RAYON_NUM_THREADS, set by the parent)
//   params SIZE REPS            native chunkBuffer / cutPoints at 8K..64K averages, and the bytes a 1-byte insert
//                               makes new
//   workers SIZE REPS N         N worker threads, each calling native chunkBuffer on its own buffer at once
//   fallback SIZE REPS          the TypeScript fallback's chunkBuffer (and a cross-check against native)

import path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { CHUNKING_DIST, loadNativeAddon, median, nowMs } from './common.mjs';
import { randomBuffer } from './gen.mjs';

const ID = 32;
const PACKED = 36;

function out(o) {
  process.stdout.write(JSON.stringify(o) + '\n');
}

function chunkLens(chunks) {
  const n = chunks.length / PACKED;
  const lens = new Array(n);
  for (let i = 0; i < n; i++) lens[i] = chunks.readUInt32LE(i * PACKED + ID);
  return lens;
}

/** Bytes (and chunks) of `b` whose ids do not occur in `a`: what a sender would have to send literally. */
function newChunkBytes(a, b) {
  const have = new Set();
  for (let o = 0; o < a.length; o += PACKED) have.add(a.toString('latin1', o, o + ID));
  let bytes = 0;
  let chunks = 0;
  for (let o = 0; o < b.length; o += PACKED) {
    if (!have.has(b.toString('latin1', o, o + ID))) {
      bytes += b.readUInt32LE(o + ID);
      chunks++;
    }
  }
  return { bytes, chunks };
}

/** `buf` with one byte inserted at each of `positions` (ascending). */
function withInserts(buf, positions) {
  const outBuf = Buffer.allocUnsafe(buf.length + positions.length);
  let src = 0;
  let dst = 0;
  positions.forEach((p, i) => {
    dst += buf.copy(outBuf, dst, src, p);
    outBuf[dst++] = (0x5a + i) & 0xff;
    src = p;
  });
  buf.copy(outBuf, dst, src);
  return outBuf;
}

function timeIt(reps, fn) {
  const ms = [];
  let last;
  for (let i = 0; i < reps; i++) {
    const t = nowMs();
    last = fn();
    ms.push(nowMs() - t);
  }
  return { ms: median(ms), all: ms, last };
}

async function timeItAsync(reps, fn) {
  const ms = [];
  let last;
  for (let i = 0; i < reps; i++) {
    const t = nowMs();
    last = await fn();
    ms.push(nowMs() - t);
  }
  return { ms: median(ms), all: ms, last };
}

if (!isMainThread) {
  // Worker: build a buffer, wait for the go signal, chunk it REPS times, report.
  const native = loadNativeAddon();
  const { size, reps, seed } = workerData;
  const buf = randomBuffer(size, seed);
  native.chunkBuffer(buf.subarray(0, 1 << 20)); // warm
  parentPort.postMessage({ ready: true });
  parentPort.once('message', () => {
    const t = nowMs();
    for (let i = 0; i < reps; i++) native.chunkBuffer(buf);
    parentPort.postMessage({ done: true, ms: nowMs() - t });
  });
} else {
  const [mode, ...args] = process.argv.slice(2);
  const native = loadNativeAddon();

  if (mode === 'files') {
    const [repsS, how, ...files] = args;
    const reps = Number(repsS);
    const root = path.dirname(files[0]);
    const names = files.map((f) => path.basename(f));
    const runOnce = async () => {
      if (how === 'all') {
        const res = await native.chunkFiles(root, names);
        for (const r of res) if (r.error) throw new Error(r.error);
        return res.reduce((s, r) => s + r.recipe.size, 0);
      }
      let bytes = 0;
      for (const n of names) {
        const [r] = await native.chunkFiles(root, [n]);
        if (r.error) throw new Error(r.error);
        bytes += r.recipe.size;
      }
      return bytes;
    };
    const t = await timeItAsync(reps, runOnce);
    out({ mode, how, threads: process.env.RAYON_NUM_THREADS ?? null, bytes: t.last, ms: t.ms, all: t.all });
  } else if (mode === 'params') {
    const size = Number(args[0]);
    const reps = Number(args[1]);
    const buf = randomBuffer(size, 'params-buffer');
    const mid = size >> 1;
    const oneInsert = withInserts(buf, [mid]);
    const K = 16;
    const spread = [];
    for (let k = 0; k < K; k++) spread.push(Math.floor(((k + 0.5) / K) * size));
    const manyInserts = withInserts(buf, spread);
    const rows = [];
    for (const avg of [8192, 16384, 32768, 65536]) {
      const params = { minSize: avg / 4, avgSize: avg, maxSize: avg * 4 };
      native.chunkBuffer(buf.subarray(0, 4 << 20), params); // warm
      const full = timeIt(reps, () => native.chunkBuffer(buf, params));
      const cut = timeIt(reps, () => native.cutPoints(buf, params));
      const base = full.last.chunks;
      const one = newChunkBytes(base, native.chunkBuffer(oneInsert, params).chunks);
      const many = newChunkBytes(base, native.chunkBuffer(manyInserts, params).chunks);
      const lens = chunkLens(base);
      rows.push({
        params,
        chunkMs: full.ms,
        chunkAll: full.all,
        cutMs: cut.ms,
        cutAll: cut.all,
        chunks: lens.length,
        meanChunk: size / lens.length,
        recipeBytes: base.length,
        insertMidNewBytes: one.bytes,
        insertMidNewChunks: one.chunks,
        insertSpreadNewBytesPerInsert: many.bytes / K,
        insertSpreadNewChunksPerInsert: many.chunks / K,
      });
    }
    out({ mode, size, reps, inserts: K, defaultParams: native.defaultChunkParams(), rows });
  } else if (mode === 'workers') {
    const [sizeS, repsS, nS] = args;
    const size = Number(sizeS);
    const reps = Number(repsS);
    const n = Number(nS);
    const workers = [];
    for (let i = 0; i < n; i++) workers.push(new Worker(new URL(import.meta.url), { workerData: { size, reps, seed: `worker-${i}` } }));
    const first = (w) =>
      new Promise((res, rej) => {
        w.once('message', res);
        w.once('error', rej);
      });
    await Promise.all(workers.map(first));
    const t = nowMs();
    const dones = workers.map(first);
    for (const w of workers) w.postMessage('go');
    const each = await Promise.all(dones);
    const ms = nowMs() - t;
    await Promise.all(workers.map((w) => w.terminate()));
    out({ mode, workers: n, bytes: size * reps * n, ms, each: each.map((e) => e.ms) });
  } else if (mode === 'fallback') {
    const size = Number(args[0]);
    const reps = Number(args[1]);
    const { createFallbackChunker } = await import(pathToFileURL(CHUNKING_DIST).href);
    const fb = await createFallbackChunker();
    const buf = randomBuffer(size, 'fallback-buffer');
    fb.chunkBuffer(buf.subarray(0, 8 << 20)); // warm the JIT and the wasm hasher
    const t = timeIt(reps, () => fb.chunkBuffer(buf));
    const nativeRecipe = native.chunkBuffer(buf);
    const matches = Buffer.compare(nativeRecipe.digest, t.last.digest) === 0 && nativeRecipe.size === t.last.size;
    out({ mode, kind: fb.kind, bytes: size, ms: t.ms, all: t.all, chunks: t.last.chunks.length / PACKED, matchesNative: matches });
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
}
