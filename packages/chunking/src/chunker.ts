import type { ChunkParams } from './params.js';
import { CHUNK_REF_SIZE, chunkRefId, chunkRefLen } from './layouts.js';
import type { Recipe } from './recipe.js';

/** Chunking and hashing, by the native addon or the TypeScript fallback; both give byte-identical results. */
export interface Chunker {
  readonly kind: 'native' | 'fallback';
  /** BLAKE3 of `data` (a chunk id when `data` is one chunk). */
  blake3(data: Uint8Array): Buffer;
  /** Chunks a whole in-memory buffer. Throws a RangeError on invalid parameters. */
  chunkBuffer(data: Uint8Array, params?: ChunkParams): Recipe;
  /** Chunks a file while holding only a bounded window of it in memory; same result as `chunkBuffer`. */
  chunkFile(path: string | Buffer, params?: ChunkParams): Promise<Recipe>;
  /** The whole-file digest of packed chunks (`Recipe.chunks`). */
  recipeDigest(chunks: Buffer): Buffer;
  /**
   * Checks consecutive chunks of `data` against packed chunk refs (`CHUNK_REF`): the index of the
   * first chunk that does not match, or -1. The native one hashes off the JavaScript thread.
   */
  verifyChunks(data: Buffer, refs: Buffer): Promise<number>;
}

/** The same check, synchronously, with any BLAKE3. */
export function verifyChunksWith(hash: (d: Uint8Array) => Buffer, data: Buffer, refs: Buffer): number {
  let off = 0;
  const whole = Math.floor(refs.length / CHUNK_REF_SIZE);
  for (let i = 0; i < whole; i++) {
    const len = chunkRefLen(refs, i);
    if (off + len > data.length || !hash(data.subarray(off, off + len)).equals(chunkRefId(refs, i))) return i;
    off += len;
  }
  return off === data.length && refs.length % CHUNK_REF_SIZE === 0 ? -1 : Math.max(0, refs.length / CHUNK_REF_SIZE - 1);
}
