// chunkFiles with hints (each file's previous recipe) must give exactly what chunkFiles gives without them, for
// any edit and any hint, through the JavaScript API on files on disk. Replay a failure with SKYSYNC_SEED=<seed>.

import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as Native from '../native/index.js';
import { Rng, seedFromEnv } from './helpers/random.js';

const require = createRequire(import.meta.url);
const native = require('../native/index.cjs') as typeof Native;

const MiB = 1024 * 1024;
const SMALL: Native.ChunkParams = { minSize: 256, avgSize: 1024, maxSize: 4096 };

let root: string;
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-hinted-'));
});
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

/** Random bytes, or low-entropy bytes with repeated blocks and zero runs, so chunk ids repeat too. */
function content(rng: Rng, len: number): Buffer {
  if (rng.chance(0.6)) return rng.bytes(len);
  const block = rng.bytes(1 + rng.int(20_000));
  const parts: Buffer[] = [];
  let n = 0;
  while (n < len) {
    const part = rng.pick([block, Buffer.alloc(rng.int(50_000)), Buffer.from(rng.bytes(rng.int(30_000)).map((b) => b & 3))]);
    parts.push(part);
    n += part.length;
  }
  return Buffer.concat(parts).subarray(0, len);
}

/** One random edit; positions are often right at a chunk boundary of the old file, where a cut is most fragile. */
function edit(rng: Rng, old: Buffer, cuts: number[]): [Buffer, string] {
  const at = (len: number) => (cuts.length && rng.chance(0.5) ? Math.max(0, Math.min(len, rng.pick(cuts) + rng.int(5) - 2)) : rng.int(len + 1));
  const kind = rng.pick(['insert', 'delete', 'overwrite', 'truncate', 'append', 'prepend', 'swap', 'empty', 'same', 'one byte']);
  switch (kind) {
    case 'insert': {
      const p = at(old.length);
      return [Buffer.concat([old.subarray(0, p), rng.bytes(1 + rng.int(3000)), old.subarray(p)]), kind];
    }
    case 'delete': {
      const p = at(old.length);
      return [Buffer.concat([old.subarray(0, p), old.subarray(Math.min(old.length, p + 1 + rng.int(5000)))]), kind];
    }
    case 'overwrite': {
      const b = Buffer.from(old);
      if (b.length) for (let i = 0, p = at(b.length - 1); i < 1 + rng.int(100) && p + i < b.length; i++) b[p + i]! ^= 0xa5;
      return [b, kind];
    }
    case 'truncate':
      return [old.subarray(0, at(old.length)), kind];
    case 'append':
      return [Buffer.concat([old, rng.bytes(1 + rng.int(100_000))]), kind];
    case 'prepend':
      return [Buffer.concat([rng.bytes(1 + rng.int(100_000)), old]), kind];
    case 'swap': {
      const b = Buffer.from(old);
      const half = b.length >> 1;
      const n = Math.min(1 + rng.int(200_000), half);
      const x = rng.int(half - n + 1);
      const y = half + rng.int(b.length - half - n + 1);
      const tmp = Buffer.from(b.subarray(x, x + n));
      b.copy(b, x, y, y + n);
      tmp.copy(b, y);
      return [b, kind];
    }
    case 'empty':
      return [Buffer.alloc(0), kind];
    case 'same':
      return [old, kind];
    default: {
      const p = at(old.length);
      return [Buffer.concat([old.subarray(0, p), Buffer.from([rng.int(256)]), old.subarray(p)]), kind];
    }
  }
}

function cutsOf(recipe: Native.Recipe): number[] {
  const out: number[] = [];
  let end = 0;
  for (let i = 0; i < recipe.chunks.length; i += 36) {
    end += recipe.chunks.readUInt32LE(i + 32);
    out.push(end);
  }
  return out;
}

async function recipeOf(rel: string, params: Native.ChunkParams): Promise<Native.Recipe> {
  const [o] = await native.chunkFiles(root, [rel], params);
  if (!o?.recipe) throw new Error(`${rel}: ${o?.error}`);
  return o.recipe;
}

describe('chunkFiles with hints', () => {
  for (const [name, params] of [
    ['small params', SMALL],
    ['default params', native.defaultChunkParams()],
  ] as const) {
    it(`equals chunkFiles without hints after random edits (${name})`, async () => {
      const seed = seedFromEnv();
      const rng = new Rng(seed);
      const paths: string[] = [];
      const hints: Array<Buffer | null | undefined> = [];
      const what: string[] = [];
      for (let i = 0; i < 14; i++) {
        const rel = `${name.replace(' ', '-')}-${i}`;
        const old = content(rng, rng.chance(0.15) ? rng.int(MiB) : MiB + rng.int(5 * MiB));
        fs.writeFileSync(path.join(root, rel), old);
        const before = await recipeOf(rel, params);
        let [now, kind] = edit(rng, old, cutsOf(before));
        if (rng.chance(0.3)) [now, kind] = [edit(rng, now, [])[0], `${kind} and more`];
        fs.writeFileSync(path.join(root, rel), now);
        paths.push(rel);
        what.push(`${rel}: ${kind}, ${old.length} -> ${now.length} bytes`);
        hints.push(before.chunks);
      }
      // No hint, a hint from an unrelated file, and a garbage hint that is well formed.
      const unrelated = await recipeOf(paths[1]!, params);
      hints[2] = null;
      hints[3] = undefined;
      hints[4] = unrelated.chunks;
      hints[5] = rng.bytes(36 * (1 + rng.int(500)));
      what[4] += ' (unrelated hint)';
      what[5] += ' (garbage hint)';
      // A path that does not exist: the same read error either way.
      paths.push('missing');
      hints.push(hints[0]);
      what.push('missing');

      const plain = await native.chunkFiles(root, paths, params);
      const hinted = await native.chunkFiles(root, paths, params, hints);
      expect(hinted.length).toBe(plain.length);
      for (let i = 0; i < paths.length; i++) {
        const msg = `${what[i]}; replay with SKYSYNC_SEED=${seed}`;
        expect(hinted[i]!.error, msg).toBe(plain[i]!.error);
        expect(hinted[i]!.recipe?.size, msg).toBe(plain[i]!.recipe?.size);
        expect(hinted[i]!.recipe?.digest.equals(plain[i]!.recipe!.digest) ?? true, msg).toBe(true);
        expect(hinted[i]!.recipe?.chunks.equals(plain[i]!.recipe!.chunks) ?? true, msg).toBe(true);
      }
      expect(hinted.at(-1)!.error).toMatch(/No such file/);
    });
  }

  it('a one-byte insert in a large file gives the recipe of a full pass', async () => {
    const rng = new Rng(seedFromEnv());
    const old = rng.bytes(24 * MiB);
    fs.writeFileSync(path.join(root, 'large'), old);
    const before = await recipeOf('large', native.defaultChunkParams());
    const mid = old.length >> 1;
    fs.writeFileSync(path.join(root, 'large'), Buffer.concat([old.subarray(0, mid), Buffer.from([1]), old.subarray(mid)]));
    const [plain] = await native.chunkFiles(root, ['large']);
    const [hinted] = await native.chunkFiles(root, ['large'], null, [before.chunks]);
    expect(hinted!.recipe!.chunks.equals(plain!.recipe!.chunks)).toBe(true);
    expect(hinted!.recipe!.digest.equals(plain!.recipe!.digest)).toBe(true);
    // Only the chunks around the insert are new.
    const old36 = new Set<string>();
    for (let i = 0; i < before.chunks.length; i += 36) old36.add(before.chunks.subarray(i, i + 36).toString('hex'));
    let fresh = 0;
    for (let i = 0; i < plain!.recipe!.chunks.length; i += 36) if (!old36.has(plain!.recipe!.chunks.subarray(i, i + 36).toString('hex'))) fresh++;
    expect(fresh).toBeLessThanOrEqual(4);
  });

  it('rejects hints that do not fit the paths', async () => {
    fs.writeFileSync(path.join(root, 'a'), 'a');
    expect(() => native.chunkFiles(root, ['a', 'a'], null, [null])).toThrow(/one entry per path/);
    expect(() => native.chunkFiles(root, ['a'], null, [Buffer.alloc(35)])).toThrow(/hint 0: packed chunks must be a multiple of 36 bytes/);
    const [o] = await native.chunkFiles(root, ['a'], null, [Buffer.alloc(0)]);
    expect(o!.recipe!.size).toBe(1);
  });
});
