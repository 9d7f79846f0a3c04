import type { ChunkParams } from './params.js';
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
}
