// What a bucket fetch placed at a destination, kept beside the push manifests (~/.skysync/state/<hash>.bucket):
// for each path, the object's size and version and the file's stat right after it was placed. A later fetch skips
// an object whose version is the same and whose file still stands as placed; a deletion removes only a file that
// still stands as placed (anything else is a job's). Keys and versions only: no grant or URL is ever written.

import type fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

export interface PlacedObject {
  size: number;
  version: string;
  mtimeMs: number;
  ino: number;
}

export type BucketState = Map<string, PlacedObject>;

/**
 * What the destination was the last time: one object's file (`object`: the one path is its name in its directory)
 * or a directory of objects (`prefix`: paths below it). Null: not recorded (files written before it was).
 */
export type MountKind = 'object' | 'prefix' | null;

const FORMAT = 1;

export async function loadBucketState(file: string, log: (m: string) => void): Promise<{ objects: BucketState; kind: MountKind }> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { objects: new Map(), kind: null };
    throw e;
  }
  try {
    const parsed = JSON.parse(text) as { format?: number; kind?: unknown; objects?: Record<string, PlacedObject> };
    if (parsed.format !== FORMAT || typeof parsed.objects !== 'object' || !parsed.objects) throw new Error('unknown format');
    const objects: BucketState = new Map();
    for (const [p, r] of Object.entries(parsed.objects)) {
      if (typeof r?.size === 'number' && typeof r.version === 'string' && typeof r.mtimeMs === 'number' && typeof r.ino === 'number') objects.set(p, r);
    }
    return { objects, kind: parsed.kind === 'object' || parsed.kind === 'prefix' ? parsed.kind : null };
  } catch (e) {
    // A damaged record costs a full fetch (and no deletion), never a wrong skip.
    log(`${file}: ignored (${(e as Error).message}); every object is fetched again`);
    return { objects: new Map(), kind: null };
  }
}

export async function saveBucketState(file: string, state: BucketState, kind: Exclude<MountKind, null>): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  await fsp.writeFile(tmp, JSON.stringify({ format: FORMAT, kind, objects: Object.fromEntries(state) }), { mode: 0o600 });
  await fsp.rename(tmp, file);
}

/** Whether the file at a path still stands as skysync placed it (not replaced nor changed by a job). */
export function standsAsPlaced(st: fs.Stats | undefined, placed: PlacedObject): boolean {
  return !!st && st.isFile() && st.size === placed.size && st.mtimeMs === placed.mtimeMs && st.ino === placed.ino;
}
