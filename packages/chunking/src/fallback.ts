// The pure TypeScript chunker: FastCDC from ./fastcdc.ts and BLAKE3 from hash-wasm. Used where the native
// addon cannot load; it must produce byte-identical recipes.

import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { IHasher } from 'hash-wasm';
import { verifyChunksWith, type Chunker } from './chunker.js';
import { WasmCdc } from './cdc-wasm.js';
import { finalCutsJs, makeCutter } from './fastcdc.js';
import type { Cutter } from './fastcdc.js';
import type { ChunkParams } from './params.js';
import { DEFAULT_PARAMS } from './params.js';
import type { Recipe } from './recipe.js';
import { CHUNK_REF, CHUNK_REF_SIZE, chunkRefCount } from './layouts.js';
import { DIGEST_PREFIX } from './recipe.js';

/**
 * Default streaming window of `chunkFile` (two are kept, one being read while the other is hashed); it grows
 * to 2 × maxSize for large chunk parameters.
 */
export const DEFAULT_WINDOW = 4 * 1024 * 1024;

export interface FallbackOptions {
  /** Bytes buffered by `chunkFile` (at least 2 × maxSize is used whatever this says). */
  windowSize?: number;
  /**
   * Where the gear-hash loop runs: 'wasm' (default; a small WebAssembly function, falls back to 'js' when
   * WebAssembly cannot compile it) or 'js' (the reference implementation, slower).
   */
  engine?: 'wasm' | 'js';
}

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/**
 * One hasher serves every call: each use (init, update, digest) runs synchronously, so async callers can
 * never interleave on it.
 */
class Hashing {
  constructor(private readonly h: IHasher) {}

  hash(data: Uint8Array): Buffer {
    const h = this.h;
    h.init();
    h.update(data);
    return toBuffer(h.digest('binary'));
  }

  /** Hashes `data[start..start+len]` into `out` at `at`. */
  hashInto(data: Uint8Array, start: number, len: number, out: Uint8Array, at: number): void {
    const h = this.h;
    h.init();
    h.update(data.subarray(start, start + len));
    out.set(h.digest('binary'), at);
  }

  recipeDigest(chunks: Uint8Array): Buffer {
    chunkRefCount(chunks);
    const h = this.h;
    h.init();
    h.update(DIGEST_PREFIX);
    h.update(chunks);
    return toBuffer(h.digest('binary'));
  }

  /** Packs the chunks of `data` whose lengths are `lens`, starting at `start`, into a fresh buffer. */
  pack(data: Uint8Array, start: number, lens: readonly number[]): Buffer {
    const out = Buffer.allocUnsafe(lens.length * CHUNK_REF_SIZE);
    let s = start;
    for (let i = 0, o = 0; i < lens.length; i++, o += CHUNK_REF_SIZE) {
      const len = lens[i]!;
      this.hashInto(data, s, len, out, o + CHUNK_REF.id);
      out.writeUInt32LE(len, o + CHUNK_REF.len);
      s += len;
    }
    return out;
  }
}

/** Reads until `len` bytes or EOF; fewer than `len` means EOF. */
async function readFull(fh: FileHandle, buf: Buffer, off: number, len: number): Promise<number> {
  let got = 0;
  while (got < len) {
    const { bytesRead } = await fh.read(buf, off + got, len - got, null);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

type FinalCuts = (src: Uint8Array, filled: number, eof: boolean, c: Cutter, lens: number[]) => number;

let sharedHasher: Promise<IHasher> | undefined;
let sharedWasm: WasmCdc | null | undefined;

function cutEngine(engine: 'wasm' | 'js'): FinalCuts {
  if (engine === 'wasm') {
    // Synchronous calls only, so one instance serves every chunker.
    if (sharedWasm === undefined) sharedWasm = WasmCdc.create();
    const w = sharedWasm;
    if (w) return (src, filled, eof, c, lens) => w.finalCuts(src, filled, eof, c, lens);
  }
  return finalCutsJs;
}

export async function createFallbackChunker(opts: FallbackOptions = {}): Promise<Chunker> {
  // hash-wasm compiles its module once per process; one hasher instance is enough for any number of chunkers.
  // Loaded on first use: processes that have the native addon never pay for hash-wasm's start-up.
  sharedHasher ??= import('hash-wasm').then((m) => m.createBLAKE3());
  let hasher: IHasher;
  try {
    hasher = await sharedHasher;
  } catch (e) {
    sharedHasher = undefined;
    throw e;
  }
  const hashing = new Hashing(hasher);
  const windowOpt = opts.windowSize ?? DEFAULT_WINDOW;
  const finalCuts = cutEngine(opts.engine ?? 'wasm');

  function chunkBuffer(data: Uint8Array, params: ChunkParams = DEFAULT_PARAMS): Recipe {
    const c = makeCutter(params);
    const lens: number[] = [];
    finalCuts(data, data.length, true, c, lens);
    const chunks = hashing.pack(data, 0, lens);
    return { size: data.length, digest: hashing.recipeDigest(chunks), chunks };
  }

  async function chunkFile(path: string | Buffer, params: ChunkParams = DEFAULT_PARAMS): Promise<Recipe> {
    const c = makeCutter(params);
    // Two buffers: one is cut and hashed while the next window is read into the other. Each has `head` bytes
    // in front of the window for the uncut tail of the previous one (always shorter than maxSize).
    const window = Math.max(windowOpt, 2 * c.maxSize);
    const head = c.maxSize;
    const bufs = [Buffer.allocUnsafe(head + window), Buffer.allocUnsafe(head + window)] as const;
    const parts: Buffer[] = [];
    const lens: number[] = [];
    const fh = await open(path, 'r');
    let inFlight: Promise<number> | undefined;
    try {
      let cur = 0;
      let tail = 0;
      let size = 0;
      let next = readFull(fh, bufs[0], head, window);
      inFlight = next;
      for (;;) {
        const got = await next;
        inFlight = undefined;
        const eof = got < window;
        if (!eof) {
          next = readFull(fh, bufs[cur ^ 1]!, head, window);
          inFlight = next;
        }
        const view = bufs[cur]!.subarray(head - tail, head + got);
        // Everything from here to the next await is synchronous, so the shared hasher is ours.
        const used = finalCuts(view, view.length, eof, c, lens);
        if (lens.length > 0) parts.push(hashing.pack(view, 0, lens));
        size += used;
        if (eof) break;
        tail = view.length - used;
        bufs[cur ^ 1]!.set(view.subarray(used), head - tail);
        cur ^= 1;
      }
      const chunks = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      return { size, digest: hashing.recipeDigest(chunks), chunks };
    } finally {
      // Never close under a read in flight (only left over when something above threw).
      if (inFlight) await inFlight.catch(() => 0);
      await fh.close();
    }
  }

  return {
    kind: 'fallback',
    blake3: (data) => hashing.hash(data),
    chunkBuffer,
    chunkFile,
    recipeDigest: (chunks) => hashing.recipeDigest(chunks),
    verifyChunks: async (data, refs) => verifyChunksWith((d) => hashing.hash(d), data, refs),
  };
}

/** Chunk lengths of a whole buffer by the TypeScript FastCDC (the native addon's `cutPoints`). */
export function cutPoints(data: Uint8Array, params: ChunkParams = DEFAULT_PARAMS, engine: 'wasm' | 'js' = 'wasm'): number[] {
  const lens: number[] = [];
  cutEngine(engine)(data, data.length, true, makeCutter(params), lens);
  return lens;
}
