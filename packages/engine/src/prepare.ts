// Preparing the source of a push: one scan (partial when the watch service vouches for it) and one chunking
// pass, shared by every node.

import path from 'node:path';
import fsp from 'node:fs/promises';
import type { Change, NativeAddon, Tree } from '@skysync/chunking';
import { displayPath, parentOf, trace } from '@skysync/protocol';
import { RecipeQueue, type Recipe, type ToChunk } from './recipes.js';
import { travelOrder } from './order.js';
import type { SavedWatch } from './state.js';
import { askWatch, type WatchAnswer } from './watch.js';

/** What the one scan and chunking pass of a push produce, shared by every node. */
export interface Prepared {
  tree: Tree;
  /** Changes against `base`, the tree most nodes were left at (null: nothing known, everything is added). */
  changes: Change[];
  base: Tree | null;
  /** New recipes of the changed files, cut in travel order while the first ones are already being sent. */
  recipes: RecipeQueue;
  /**
   * What the scan found but could not examine (a directory it could not list, an entry it could not stat), with
   * why. The source has them: the remote keeps what stands there, also under `--delete`.
   */
  unreadable: Map<string, string>;
  files: number;
  bytes: number;
  scanMs: number;
  scan: 'watch' | 'full';
  scanDirs: number;
  scanReason?: string;
  /** To save with `tree`: the watch token taken before the scan, and what it warned about. */
  watch: SavedWatch | null;
}

/** Checks the source before anything else, so a typo gives one clear line. */
export async function checkSource(dir: string): Promise<void> {
  const st = await fsp.stat(dir).catch(() => null);
  if (!st) throw new Error(`${dir}: no such directory; pass --workdir DIR or run from your project`);
  if (!st.isDirectory()) throw new Error(`${dir}: not a directory; the workdir must be a directory`);
}

/**
 * What a partial scan lists: what the watch service names, plus what the last scan warned about (unreadable
 * entries, special files, bad ignore files), since a full scan warns about them again every time: those paths
 * are walked whole and their directories listed.
 */
export function rescanOf(answer: { dirs: string[]; subtrees: string[] }, recheck: string[]): { dirs: string[]; subtrees: string[] } {
  return { dirs: [...answer.dirs, ...recheck.map(parentOf)], subtrees: [...answer.subtrees, ...recheck] };
}

/**
 * The scan itself: partial when the watch service vouches for what changed since the token saved with `base`,
 * full otherwise. The token asked for now (before scanning) is saved with the tree this scan produces.
 */
async function scanSource(source: string, base: Tree | null, native: NativeAddon, saved: SavedWatch | null) {
  const answer: WatchAnswer | null = await askWatch(source, saved?.token ?? null);
  trace(`watch service answered: ${answer === null ? 'off' : answer.full ? `full scan (${answer.reason ?? 'no reason'})` : 'partial scan'}`);
  // Without a new token (no service yet, no answer in time, watching off), the one saved with the base still
  // vouches for the new tree: whatever changed after this scan began also changed after it was given.
  const token = answer?.token ?? saved?.token ?? null;
  const watch = token ? { token, recheck: [] as string[] } : null;
  if (answer && base && saved && !answer.full) {
    const { dirs, subtrees } = rescanOf(answer, saved.recheck);
    const scanned = await native.scanPartial(source, base, dirs, subtrees);
    return { scanned, watch, reason: scanned.stats.partial ? undefined : 'the kind of ignore rules changed' };
  }
  // The service's own reason first when it gave no token (starting, overflowed, unreachable): that one says why
  // the next push will scan in full again.
  const reason = answer === null ? undefined : !base ? 'no earlier tree' : answer.token === null || saved ? answer.reason : 'no watch token saved with the earlier tree';
  return { scanned: await native.scan(source, base), watch, reason };
}

export async function prepareDir(source: string, base: Tree | null, native: NativeAddon, warn: (m: string) => void, saved: SavedWatch | null): Promise<Prepared> {
  const tScan = performance.now();
  const { scanned, watch, reason } = await scanSource(source, base, native, saved);
  const scanMs = performance.now() - tScan;
  if (watch) watch.recheck = scanned.warnings.map((w) => w.path);
  // What could not be read is a failure of each node's push (listed with the others, exit 3), not a warning.
  const unreadable = new Map<string, string>();
  for (const w of scanned.warnings) {
    if (w.kind === 'unreadable') unreadable.set(w.path, w.message);
    else warn(`${displayPath(w.path) || '.'}: ${w.message}`);
  }
  const tree = scanned.tree;
  // Files whose content must be chunked: new or changed locally. Chunked once, whatever the number of nodes.
  const changed: ToChunk[] = [];
  for (const c of scanned.changes) {
    if (c.status === 'deleted' || c.entry.kind !== 'file') continue;
    changed.push({ path: c.entry.path, size: c.entry.size, hint: c.prevRecipe?.chunks ?? null });
  }
  const recipes = new RecipeQueue(source, travelOrder(changed), native, tree);
  return {
    tree,
    changes: scanned.changes,
    base,
    recipes,
    unreadable,
    files: scanned.stats.files + scanned.stats.symlinks,
    bytes: scanned.stats.bytes,
    scanMs,
    scan: scanned.stats.partial ? 'watch' : 'full',
    scanDirs: scanned.stats.dirsListed,
    ...(reason && !scanned.stats.partial ? { scanReason: reason } : {}),
    watch,
  };
}

/** A single file as a tree of one entry named `name`; it is chunked only when its size, mtime or mode moved. */
export async function prepareFile(source: string, name: string, base: Tree | null, native: NativeAddon): Promise<Prepared> {
  const tScan = performance.now();
  const st = await fsp.stat(source, { bigint: true });
  const entry = {
    path: name,
    kind: 'file' as const,
    mode: Number(st.mode & 0o7777n),
    size: Number(st.size),
    mtimeSec: Number(st.mtimeNs / 1_000_000_000n),
    mtimeNsec: Number(st.mtimeNs % 1_000_000_000n),
  };
  const prev = base?.entry(name) ?? null;
  const prevRecipe = base?.recipe(name) ?? null;
  const same =
    prev !== null &&
    prevRecipe !== null &&
    prev.kind === 'file' &&
    prev.size === entry.size &&
    prev.mode === entry.mode &&
    prev.mtimeSec === entry.mtimeSec &&
    prev.mtimeNsec === entry.mtimeNsec;
  const tree = native.Tree.empty(native.defaultChunkParams());
  const results = new Map<string, Recipe | string>();
  let chunks: Buffer | undefined = same ? prevRecipe.chunks : undefined;
  if (!same) {
    const [o] = await native.chunkFiles(path.dirname(source), [path.basename(source)], null, prevRecipe ? [prevRecipe.chunks] : null);
    if (o?.recipe && o.recipe.size === entry.size) {
      chunks = o.recipe.chunks;
      results.set(name, o.recipe);
    } else {
      results.set(name, o?.error ? `cannot read it: ${o.error}` : 'changed while it was read');
    }
  }
  tree.update([{ ...entry, observedMtimeNs: '0', ino: '0', ...(chunks ? { chunks } : {}) }], []);
  const unreadable = typeof results.get(name) === 'string';
  const changes: Change[] = same || unreadable ? [] : [{ status: prev ? 'modified' : 'added', entry, prevKind: prev?.kind, ...(prevRecipe ? { prevRecipe } : {}) }];
  const recipes = RecipeQueue.settled(native, tree, results);
  return {
    tree,
    changes,
    base,
    recipes,
    unreadable: new Map(),
    files: 1,
    bytes: entry.size,
    scanMs: performance.now() - tScan,
    scan: 'full',
    scanDirs: 0,
    watch: null,
  };
}
