// What the client remembers per (target, destination, source): the tree it last pushed, as the agent
// acknowledged it, and that push's generation. Kept under $SKYSYNC_STATE_DIR (default ~/.cache/skysync).

import fsp from 'node:fs/promises';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { stateRoot } from '@skysync/transport';
import type { NativeAddon, Tree } from '@skysync/chunking';
import { trace } from '@skysync/protocol';

export interface SyncState {
  generation: string | null;
  /** Shared by the states of nodes that were left at the same tree by one push. */
  treeId: string | null;
  tree: Tree | null;
  /** What the watch service said just before the scan that produced `tree` (see watch.ts). */
  watch: SavedWatch | null;
  warning: string | null;
}

export interface SavedWatch {
  token: string;
  /** Paths the scan warned about: a warning recurs at every scan, so a partial scan lists them again. */
  recheck: string[];
}

function savedWatch(v: unknown): SavedWatch | null {
  if (!v || typeof v !== 'object') return null;
  const w = v as { token?: unknown; recheck?: unknown };
  if (typeof w.token !== 'string' || !Array.isArray(w.recheck) || !w.recheck.every((p) => typeof p === 'string')) return null;
  return { token: w.token, recheck: w.recheck as string[] };
}

export { stateRoot };

export function stateDirFor(kind: 'push' | 'pull', ...key: string[]): string {
  const h = createHash('sha256').update(key.join('\0')).digest('hex').slice(0, 32);
  return path.join(stateRoot(), kind, h);
}

export interface StateMeta {
  generation: string | null;
  treeId: string | null;
  watch: SavedWatch | null;
}

/** The small part of a saved state (generation, tree id, watch token): enough to start talking to the agent. */
export async function loadMeta(dir: string): Promise<StateMeta | null> {
  try {
    const meta = JSON.parse(await fsp.readFile(path.join(dir, 'state.json'), 'utf8')) as { generation?: string; treeId?: string; watch?: unknown };
    return {
      generation: typeof meta.generation === 'string' ? meta.generation : null,
      treeId: typeof meta.treeId === 'string' ? meta.treeId : null,
      watch: savedWatch(meta.watch),
    };
  } catch {
    return null;
  }
}

export async function loadState(dir: string, native: NativeAddon, known?: StateMeta | null): Promise<SyncState> {
  const meta = known === undefined ? await loadMeta(dir) : known;
  if (!meta) return { generation: null, treeId: null, tree: null, watch: null, warning: null };
  try {
    return { ...meta, tree: native.Tree.load(path.join(dir, 'tree.snap')), warning: null };
  } catch (e) {
    // A damaged snapshot is rebuilt: the agent then finds the chunks it already has by their ids.
    return { generation: null, treeId: null, tree: null, watch: null, warning: `${(e as Error).message}; rebuilding it` };
  }
}

/**
 * Saves the tree, then state.json, which names it. A crash between the two leaves the new tree with the old
 * state.json: its watch token is older than the tree, which only makes the next partial scan list more.
 */
export async function saveState(
  dir: string,
  generation: string,
  tree: Tree,
  info: Record<string, string>,
  treeId: string | null = null,
  watch: SavedWatch | null = null,
): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  trace('saving state');
  tree.save(path.join(dir, 'tree.snap'));
  trace('tree saved');
  const tmp = path.join(dir, `state.json.${randomBytes(4).toString('hex')}`);
  await fsp.writeFile(tmp, JSON.stringify({ generation, treeId, ...(watch ? { watch } : {}), ...info, savedAt: new Date().toISOString() }) + '\n', { mode: 0o600 });
  await fsp.rename(tmp, path.join(dir, 'state.json'));
  trace('state saved');
}

/**
 * Replaces the watch token in state.json, leaving the tree as it is: after a scan that found the saved tree
 * exactly as it was, the newer token vouches for it as well, and the next partial scan lists less.
 */
export async function saveWatch(dir: string, watch: SavedWatch): Promise<void> {
  const file = path.join(dir, 'state.json');
  const meta = JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, unknown>;
  const tmp = path.join(dir, `state.json.${randomBytes(4).toString('hex')}`);
  await fsp.writeFile(tmp, JSON.stringify({ ...meta, watch }) + '\n', { mode: 0o600 });
  await fsp.rename(tmp, file);
}
