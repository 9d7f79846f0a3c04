// Plan: turn a changed file's new recipe into operations against what the remote holds. Runs of chunks that
// the same path already had become one copy op; runs found in another file the remote holds (a rename, a copy,
// a moved directory) become a copy from that file; the rest is literal and travels once per push.

import type { ChunkOp } from '@skysync/protocol';
import { CHUNK_REF_SIZE, chunkRefId, chunkRefLen, type Tree } from '@skysync/chunking';

export interface LiteralRef {
  /** Offset of the chunk in the new file. */
  offset: number;
  len: number;
}

export interface FilePlan {
  ops: ChunkOp[];
  /** Chunks whose bytes this file sends (first use in the push), in order. */
  literals: LiteralRef[];
  reused: number;
  literalBytes: number;
}

/** Chunks between the common head and tail below which the old version is not indexed. */
const SMALL_MIDDLE = 64;

function indexOf(recipe: Buffer): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0, o = 0; o < recipe.length; i++, o += CHUNK_REF_SIZE) {
    const k = chunkRefId(recipe, i).toString('hex');
    if (!m.has(k)) m.set(k, i);
  }
  return m;
}

function sameChunk(a: Buffer, ai: number, b: Buffer, bi: number): boolean {
  const ao = ai * CHUNK_REF_SIZE;
  const bo = bi * CHUNK_REF_SIZE;
  if (ao + CHUNK_REF_SIZE > a.length || bo + CHUNK_REF_SIZE > b.length) return false;
  return a.compare(b, bo, bo + CHUNK_REF_SIZE, ao, ao + CHUNK_REF_SIZE) === 0;
}

export class Planner {
  /** Ids whose bytes this push already carries (mirrors the receiver's rule). */
  private readonly sent = new Set<string>();
  private readonly recipeCache = new Map<string, Buffer | null>();

  constructor(
    private readonly base: Tree | null,
    /** Paths the remote changed on its side: never a source. */
    private readonly untrusted: Set<string>,
  ) {}

  private baseRecipe(path: string): Buffer | null {
    if (!this.base || this.untrusted.has(path)) return null;
    let r = this.recipeCache.get(path);
    if (r === undefined) {
      r = this.base.recipe(path)?.chunks ?? null;
      this.recipeCache.set(path, r);
    }
    return r;
  }

  planFile(path: string, chunks: Buffer, prev: Buffer | null): FilePlan {
    const n = chunks.length / CHUNK_REF_SIZE;
    const ops: ChunkOp[] = [];
    const literals: LiteralRef[] = [];
    let reused = 0;
    let literalBytes = 0;
    const own = prev && !this.untrusted.has(path) ? prev : null;
    // An edit usually leaves a long common head and tail: those become one copy op each without hashing every
    // id into a map (which cost ~60 ms for a 200 MiB file with one byte inserted).
    const m = own ? own.length / CHUNK_REF_SIZE : 0;
    let head = 0;
    let tail = 0;
    if (own) {
      while (head < n && head < m && sameChunk(chunks, head, own, head)) head++;
      while (tail < n - head && tail < m - head && sameChunk(chunks, n - 1 - tail, own, m - 1 - tail)) tail++;
    }
    const middleEnd = n - tail;
    // The middle is matched against the old version too when it is large; a small one is found by `locateChunks`,
    // which knows this path's old recipe as well.
    const ownIndex = own && (middleEnd - head > SMALL_MIDDLE || !this.base) ? indexOf(own) : null;
    // Locate elsewhere, in one call, every chunk of the middle the old version of this path lacks.
    const missing: number[] = [];
    for (let i = head; i < middleEnd; i++) {
      if (!ownIndex?.has(chunkRefId(chunks, i).toString('hex'))) missing.push(i);
    }
    const found = new Map<number, { path: string; index: number }>();
    if (this.base && missing.length) {
      const ids = Buffer.concat(missing.map((i) => chunkRefId(chunks, i)));
      const locs = this.base.locateChunks(ids);
      locs.forEach((loc, k) => {
        if (loc && !this.untrusted.has(loc.path)) found.set(missing[k]!, { path: loc.path, index: loc.index });
      });
    }
    let pendingLiteral: Buffer[] = [];
    const flushLiteral = (): void => {
      if (pendingLiteral.length) ops.push({ op: 'chunks', chunks: Buffer.concat(pendingLiteral) });
      pendingLiteral = [];
    };
    let offset = 0;
    let i = 0;
    if (head > 0) {
      ops.push({ op: 'copy', from: null, start: 0, count: head });
      for (; i < head; i++) offset += chunkRefLen(chunks, i);
      reused += head;
    }
    while (i < middleEnd) {
      const ref = chunks.subarray(i * CHUNK_REF_SIZE, (i + 1) * CHUNK_REF_SIZE);
      const key = chunkRefId(chunks, i).toString('hex');
      const len = chunkRefLen(chunks, i);
      let source: { from: string | null; recipe: Buffer; start: number } | null = null;
      const j = ownIndex?.get(key);
      if (j !== undefined) source = { from: null, recipe: own!, start: j };
      else {
        const loc = found.get(i);
        const r = loc ? this.baseRecipe(loc.path) : null;
        if (loc && r) source = { from: loc.path === path ? null : loc.path, recipe: r, start: loc.index };
      }
      if (source) {
        let k = 1;
        let bytes = len;
        while (i + k < middleEnd && sameChunk(chunks, i + k, source.recipe, source.start + k)) {
          bytes += chunkRefLen(chunks, i + k);
          k++;
        }
        flushLiteral();
        ops.push({ op: 'copy', from: source.from, start: source.start, count: k });
        reused += k;
        offset += bytes;
        i += k;
        continue;
      }
      pendingLiteral.push(ref);
      if (!this.sent.has(key)) {
        this.sent.add(key);
        literals.push({ offset, len });
        literalBytes += len;
      } else {
        reused++;
      }
      offset += len;
      i++;
    }
    flushLiteral();
    if (tail > 0) {
      ops.push({ op: 'copy', from: null, start: m - tail, count: tail });
      reused += tail;
    }
    return { ops, literals, reused, literalBytes };
  }
}
