// chunkFile streams through a bounded window and must give exactly what chunkBuffer gives for the whole file.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChunkParams, Chunker, Recipe } from '../src/index.js';
import { DEFAULT_PARAMS, DEFAULT_WINDOW, createFallbackChunker, createNativeChunker } from '../src/index.js';
import { Rng, nativeForTests } from './helpers.js';

const native = nativeForTests();
let dir = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'skysync-chunking-'));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

function same(a: Recipe, b: Recipe): void {
  expect(a.size).toBe(b.size);
  expect(a.chunks.length).toBe(b.chunks.length);
  expect(a.chunks.equals(b.chunks)).toBe(true);
  expect(a.digest.toString('hex')).toBe(b.digest.toString('hex'));
}

/** Random data with long zero runs and repeated blocks, so some cuts fall at maxSize and on window edges. */
function fileData(len: number, seed: number): Buffer {
  const rng = new Rng(seed);
  const buf = Buffer.alloc(len);
  let i = 0;
  while (i < len) {
    const n = Math.min(len - i, rng.logInt(1000, 3_000_000));
    const r = rng.float();
    if (r < 0.6) rng.fill(buf.subarray(i, i + n));
    else if (r < 0.8 && i > n) buf.copy(buf, i, i - n, i);
    // else: zeros
    i += n;
  }
  return buf;
}

async function chunkers(): Promise<Array<[string, Chunker]>> {
  const list: Array<[string, Chunker]> = [
    ['fallback', await createFallbackChunker()],
    ['fallback (js loop)', await createFallbackChunker({ engine: 'js' })],
  ];
  if (native) list.push(['native', createNativeChunker(native)]);
  return list;
}

describe('chunkFile', () => {
  it('equals chunkBuffer on a file several windows long', async () => {
    const len = 3 * DEFAULT_WINDOW + 12_345;
    const data = fileData(len, 1);
    const path = join(dir, 'big.bin');
    await writeFile(path, data);
    const fb = await createFallbackChunker();
    const whole = fb.chunkBuffer(data);
    expect(whole.chunks.length / 36).toBeGreaterThan(100);
    for (const [name, c] of await chunkers()) {
      const streamed = await c.chunkFile(path);
      expect(streamed.size, name).toBe(len);
      same(streamed, whole);
      same(c.chunkBuffer(data), whole);
    }
  });

  it('equals chunkBuffer with small windows and many parameter sets', async () => {
    const sets: ChunkParams[] = [
      { minSize: 64, avgSize: 256, maxSize: 1024 },
      { minSize: 1000, avgSize: 4096, maxSize: 9001 },
      { minSize: 8192, avgSize: 32768, maxSize: 131072 },
      { minSize: 4096, avgSize: 4096, maxSize: 4096 },
    ];
    const data = fileData(1_500_000 + 7, 2);
    const path = join(dir, 'medium.bin');
    await writeFile(path, data);
    const fb = await createFallbackChunker();
    // The smallest window allowed (2 × maxSize), and one that is not a multiple of anything.
    const small = await createFallbackChunker({ windowSize: 0 });
    const odd = await createFallbackChunker({ windowSize: 300_001 });
    for (const params of sets) {
      const whole = fb.chunkBuffer(data, params);
      same(await small.chunkFile(path, params), whole);
      same(await odd.chunkFile(path, params), whole);
      if (native) same(await createNativeChunker(native).chunkFile(path, params), whole);
    }
  });

  it('handles empty, tiny and exactly-window-sized files', async () => {
    const fb = await createFallbackChunker();
    for (const len of [0, 1, DEFAULT_PARAMS.minSize, DEFAULT_PARAMS.maxSize, DEFAULT_WINDOW, DEFAULT_WINDOW + 1]) {
      const data = fileData(len, 3 + len);
      const path = join(dir, `len-${len}.bin`);
      await writeFile(path, data);
      const whole = fb.chunkBuffer(data);
      for (const [, c] of await chunkers()) same(await c.chunkFile(path), whole);
    }
    const empty = fb.chunkBuffer(Buffer.alloc(0));
    expect(empty.chunks.length).toBe(0);
    expect(empty.digest.equals(fb.recipeDigest(Buffer.alloc(0)))).toBe(true);
  });

  it('takes byte paths, including names that are not UTF-8', async () => {
    const data = fileData(200_000, 4);
    const path = Buffer.concat([Buffer.from(join(dir, 'name-'), 'utf8'), Buffer.from([0xff, 0xfe, 0x41])]);
    await writeFile(path, data);
    const fb = await createFallbackChunker();
    const whole = fb.chunkBuffer(data);
    for (const [, c] of await chunkers()) same(await c.chunkFile(path), whole);
    const utf8 = join(dir, 'naïve ☃.bin');
    await writeFile(utf8, data);
    for (const [, c] of await chunkers()) same(await c.chunkFile(utf8), whole);
  });

  it('rejects a missing file with ENOENT and bad parameters with a RangeError', async () => {
    for (const [name, c] of await chunkers()) {
      await expect(c.chunkFile(join(dir, 'missing')), name).rejects.toMatchObject({ code: 'ENOENT' });
      await expect(c.chunkFile(join(dir, 'big.bin'), { minSize: 10, avgSize: 16, maxSize: 32 })).rejects.toThrow(RangeError);
    }
  });

  it('runs concurrent calls on one chunker independently', async () => {
    const fb = await createFallbackChunker({ windowSize: 0 });
    const files = await Promise.all(
      [5, 6, 7].map(async (seed) => {
        const data = fileData(700_000 + seed, seed);
        const path = join(dir, `concurrent-${seed}.bin`);
        await writeFile(path, data);
        return { data, path };
      }),
    );
    const params = { minSize: 1024, avgSize: 4096, maxSize: 16384 };
    const results = await Promise.all(files.map((f) => fb.chunkFile(f.path, params)));
    results.forEach((r, i) => same(r, fb.chunkBuffer(files[i]!.data, params)));
  });
});
