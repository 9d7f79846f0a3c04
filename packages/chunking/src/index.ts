// @skysync/chunking: FastCDC v2020 + BLAKE3 recipes, by the native addon when it loads and by a pure
// TypeScript fallback otherwise. Both produce byte-identical recipes (test/golden.json pins them to Rust).

import type { Chunker } from './chunker.js';
import { createFallbackChunker } from './fallback.js';
import type { NativeAddon } from './native.js';
import { createNativeChunker, loadNative } from './native.js';

export type { Chunker } from './chunker.js';
export type { ChunkParams } from './params.js';
export { DEFAULT_PARAMS, PARAM_BOUNDS, paramsValid, validateParams } from './params.js';
export type { ChunkRef, Recipe } from './recipe.js';
export { DIGEST_PREFIX, chunkCount, packChunks, unpackChunks } from './recipe.js';
export {
  CHUNK_ID_SIZE,
  CHUNK_REF,
  CHUNK_REF_SIZE,
  PLACED_RECORD,
  READ_RANGE,
  RECORD_LAYOUTS,
  WRITE_RECORD,
  WRITE_STAT,
  chunkRefCount,
  chunkRefId,
  chunkRefLen,
  readWriteStat,
  writeChunkRef,
  writeReadRange,
} from './layouts.js';
export { DEFAULT_WINDOW, createFallbackChunker, cutPoints } from './fallback.js';
export type { FallbackOptions } from './fallback.js';
export type { Change, NativeAddon, ScanResult, Tree } from './native.js';
export { createNativeChunker, loadNative, nativeLoadErrors } from './native.js';

export interface GetChunkerOptions {
  /** The addon to use; null forces the fallback. When absent, `loadNative()` decides. */
  native?: NativeAddon | null;
}

/** The native chunker when the addon loads, the TypeScript fallback otherwise. */
export async function getChunker(opts: GetChunkerOptions = {}): Promise<Chunker> {
  const addon = opts.native === undefined ? loadNative() : opts.native;
  return addon ? createNativeChunker(addon) : createFallbackChunker();
}
