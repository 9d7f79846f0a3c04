// Loading the native addon (@skysync/native) and wrapping it as a Chunker.

import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { verifyChunksWith, type Chunker } from './chunker.js';
import type { ChunkParams } from './params.js';
import { DEFAULT_PARAMS, validateParams } from './params.js';
import type { Recipe } from './recipe.js';

export type NativeAddon = typeof import('@skysync/native');
// The addon's types every package names: the tree (entries, stat data, recipes; held in Rust) and a scan's result.
export type { Tree, Change, ScanResult } from '@skysync/native';

type RequireFn = (id: string) => unknown;

/**
 * A `require` for loading `.node` files. In a CommonJS bundle (esbuild) the module-scope `require` exists and
 * `import.meta.url` does not; in ESM it is the other way round. This is the only place that touches either.
 */
function nodeRequire(): RequireFn {
  if (typeof require === 'function') return require;
  try {
    return createRequire(import.meta.url);
  } catch {
    return createRequire(resolve('noop.js'));
  }
}

function isAddon(m: unknown): m is NativeAddon {
  if (m === null || (typeof m !== 'object' && typeof m !== 'function')) return false;
  const a = m as Record<string, unknown>;
  return ['blake3', 'chunkBuffer', 'chunkFiles', 'recipeDigest'].every((k) => typeof a[k] === 'function');
}

let loadErrors: string[] = [];

/** Why each candidate of the last `loadNative` call did not load (for diagnostics). */
export function nativeLoadErrors(): readonly string[] {
  return loadErrors;
}

function envFlag(v: string | undefined): boolean {
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

/**
 * Loads the native addon: `SKYSYNC_NATIVE_PATH` first, then each candidate path of a `.node` file (relative
 * paths are taken from the working directory), then the `@skysync/native` package. Returns null when none
 * loads, or when `SKYSYNC_NO_NATIVE=1`. Never throws.
 */
export function loadNative(candidates: readonly string[] = []): NativeAddon | null {
  loadErrors = [];
  if (envFlag(process.env.SKYSYNC_NO_NATIVE)) {
    loadErrors.push('SKYSYNC_NO_NATIVE is set');
    return null;
  }
  let req: RequireFn;
  try {
    req = nodeRequire();
  } catch (e) {
    loadErrors.push(`no require: ${String(e)}`);
    return null;
  }
  const paths: string[] = [];
  const envPath = process.env.SKYSYNC_NATIVE_PATH;
  if (envPath) paths.push(envPath);
  paths.push(...candidates);
  const ids = [...paths.map((p) => (isAbsolute(p) ? p : resolve(p))), '@skysync/native'];
  for (const id of ids) {
    try {
      const m = req(id);
      if (isAddon(m)) return m;
      loadErrors.push(`${id}: not the skysync addon`);
    } catch (e) {
      loadErrors.push(`${id}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  return null;
}

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** The addon takes paths as latin1 strings, one char per byte (so names that are not UTF-8 survive). */
function bytePath(path: string | Buffer): { root: string; rel: string } {
  if (typeof path === 'string') {
    const abs = resolve(path);
    return { root: '/', rel: Buffer.from(abs, 'utf8').toString('latin1') };
  }
  // A byte path: an absolute one replaces the root when the addon joins them.
  return { root: path[0] === 0x2f ? '/' : process.cwd(), rel: path.toString('latin1') };
}

const errnoNames = new Map<number, string>(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));

/** Rust's io::Error text ends in "(os error N)"; give the Error the same `code` a Node fs call would. */
function fileError(path: string | Buffer, message: string): Error {
  const shown = typeof path === 'string' ? path : path.toString('utf8');
  const err = new Error(`${shown}: ${message}`) as NodeJS.ErrnoException;
  const m = /\(os error (\d+)\)/.exec(message);
  if (m) {
    const errno = Number(m[1]);
    const code = errnoNames.get(errno);
    err.errno = -errno;
    if (code) err.code = code;
  }
  err.path = shown;
  return err;
}

/** Up to this many bytes, verifying chunks on the calling thread is cheaper than handing them to a worker. */
const SYNC_VERIFY_MAX = 64 * 1024;

export function createNativeChunker(addon: NativeAddon): Chunker {
  function chunkBuffer(data: Uint8Array, params: ChunkParams = DEFAULT_PARAMS): Recipe {
    validateParams(params);
    return addon.chunkBuffer(asBuffer(data), params);
  }

  async function chunkFile(path: string | Buffer, params: ChunkParams = DEFAULT_PARAMS): Promise<Recipe> {
    validateParams(params);
    const { root, rel } = bytePath(path);
    const [outcome] = await addon.chunkFiles(root, [rel], params);
    if (outcome?.recipe) return outcome.recipe;
    throw fileError(path, outcome?.error ?? 'chunking failed');
  }

  return {
    kind: 'native',
    blake3: (data) => addon.blake3(asBuffer(data)),
    chunkBuffer,
    chunkFile,
    recipeDigest: (chunks) => addon.recipeDigest(chunks),
    // A small buffer is hashed on this thread: the round trip through the thread pool costs more than the hash.
    verifyChunks: (data, refs) =>
      data.length > SYNC_VERIFY_MAX ? addon.verifyChunks(data, refs) : Promise.resolve(verifyChunksWith((d) => addon.blake3(asBuffer(d)), data, refs)),
  };
}
