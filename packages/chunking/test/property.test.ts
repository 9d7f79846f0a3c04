// Seeded property test: the fallback and the native addon agree byte for byte (cut points, ids, digest) on a
// few hundred random inputs and parameter sets. Reproduce a failure with SKYSYNC_SEED=<seed printed>.

import { randomInt } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { ChunkParams } from '../src/index.js';
import { DEFAULT_PARAMS, PARAM_BOUNDS, createFallbackChunker, createNativeChunker, cutPoints, paramsValid } from '../src/index.js';
import { NATIVE_DISABLED, Rng, lengthsOf, nativeForTests } from './helpers.js';

const SEED = process.env.SKYSYNC_SEED ? Number(process.env.SKYSYNC_SEED) >>> 0 : randomInt(2 ** 32);
const CASES = process.env.SKYSYNC_CASES ? Number(process.env.SKYSYNC_CASES) : 300;
const MAX_LEN = 2 * 1024 * 1024;

function randomParams(rng: Rng): ChunkParams {
  if (rng.float() < 0.4) return { ...DEFAULT_PARAMS };
  const [minLo, minHi] = PARAM_BOUNDS.minSize;
  const [avgLo, avgHi] = PARAM_BOUNDS.avgSize;
  const [maxLo, maxHi] = PARAM_BOUNDS.maxSize;
  // Averages up to 256 KiB keep a few chunks in a 2 MiB input; sizes are often odd or not powers of two.
  // The average is a power of two and the minimum even: the only parameters the chunker really honours.
  const avgSize = 2 ** Math.round(Math.log2(rng.logInt(avgLo, Math.min(avgHi, 256 * 1024))));
  const minSize = rng.float() < 0.1 ? avgSize : Math.max(minLo, rng.logInt(minLo, Math.min(minHi, avgSize)) & ~1);
  const maxFloor = Math.max(maxLo, avgSize);
  const maxSize = rng.float() < 0.1 ? maxFloor : rng.logInt(maxFloor, Math.min(maxHi, avgSize * 16));
  const p = { minSize, avgSize, maxSize };
  if (!paramsValid(p)) throw new Error(`test bug: generated invalid params ${JSON.stringify(p)}`);
  return p;
}

function randomLength(rng: Rng, p: ChunkParams): number {
  const r = rng.float();
  if (r < 0.15) {
    // Right around the interesting sizes.
    const base = rng.pick([0, 1, p.minSize, p.avgSize, p.maxSize, 2 * p.maxSize, p.minSize + p.maxSize]);
    return Math.min(MAX_LEN, Math.max(0, base + rng.int(-2, 2)));
  }
  // Skewed towards small inputs, up to 2 MiB.
  return Math.floor(MAX_LEN * rng.float() ** 2);
}

const KINDS = ['random', 'zeros', 'byte', 'pattern', 'lowbits', 'runs', 'text', 'repeats', 'sparse'] as const;
type Kind = (typeof KINDS)[number];

function randomData(rng: Rng, len: number, kind: Kind): Buffer {
  const buf = Buffer.alloc(len);
  switch (kind) {
    case 'random':
      rng.fill(buf);
      break;
    case 'zeros':
      break;
    case 'byte':
      buf.fill(rng.int(0, 255));
      break;
    case 'pattern': {
      const pat = Buffer.alloc(rng.int(1, 300));
      rng.fill(pat);
      for (let i = 0; i < len; i += pat.length) pat.copy(buf, i, 0, Math.min(pat.length, len - i));
      break;
    }
    case 'lowbits': {
      rng.fill(buf);
      const mask = rng.pick([0x01, 0x03, 0x11, 0x80, 0x0f]);
      for (let i = 0; i < len; i++) buf[i]! &= mask;
      break;
    }
    case 'runs': {
      let i = 0;
      while (i < len) {
        const n = Math.min(len - i, rng.logInt(1, 20000));
        buf.fill(rng.int(0, 255), i, i + n);
        i += n;
      }
      break;
    }
    case 'text': {
      const words = ['sync', 'tree', 'chunk', 'the', 'a', 'recipe', 'delta', '\n', 'file', 'of', 'digest', '  '];
      let s = '';
      while (s.length < len) s += rng.pick(words) + ' ';
      buf.write(s.slice(0, len), 'latin1');
      break;
    }
    case 'repeats': {
      // Random blocks, some copied from earlier in the input: what deduplication sees.
      let i = 0;
      while (i < len) {
        const n = Math.min(len - i, rng.logInt(1, 200_000));
        if (i > 0 && rng.float() < 0.5) {
          const from = rng.int(0, i - 1);
          buf.copy(buf, i, from, from + Math.min(n, i - from));
          i += Math.min(n, i - from);
        } else {
          rng.fill(buf.subarray(i, i + n));
          i += n;
        }
      }
      break;
    }
    case 'sparse': {
      const every = rng.logInt(2, 5000);
      for (let i = rng.int(0, every); i < len; i += rng.int(1, 2 * every)) buf[i] = rng.int(1, 255);
      break;
    }
  }
  return buf;
}

const native = nativeForTests();

describe.skipIf(native === null && NATIVE_DISABLED)('fallback vs native, seeded', () => {
  it(`agrees on ${CASES} random inputs (seed ${SEED})`, async () => {
    const addon = native!;
    const nat = createNativeChunker(addon);
    const fb = await createFallbackChunker();
    const rng = new Rng(SEED);
    let bytes = 0;
    for (let i = 0; i < CASES; i++) {
      const params = randomParams(rng);
      const kind = rng.pick(KINDS);
      const len = randomLength(rng, params);
      const data = randomData(rng, len, kind);
      const what = `case ${i}: ${kind} len=${len} params=${JSON.stringify(params)}`;
      try {
        const a = fb.chunkBuffer(data, params);
        const b = nat.chunkBuffer(data, params);
        expect(a.size, 'size').toBe(len);
        expect(b.size, 'native size').toBe(len);
        if (!a.chunks.equals(b.chunks)) {
          // Show the first difference readably before failing.
          expect(lengthsOf(a.chunks), 'cut points').toEqual(lengthsOf(b.chunks));
          expect(a.chunks.toString('hex'), 'packed chunks').toBe(b.chunks.toString('hex'));
        }
        expect(a.digest.toString('hex'), 'digest').toBe(b.digest.toString('hex'));
        if (i % 10 === 0) {
          // The reference JavaScript loop too, on a sample.
          expect(cutPoints(data, params, 'js'), 'js cut points').toEqual(lengthsOf(b.chunks));
        }
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        throw new Error(`fallback and native disagree; reproduce with SKYSYNC_SEED=${SEED} (${what})\n${msg}`);
      }
      bytes += len;
    }
    expect(bytes).toBeGreaterThan(0);
  });
});
