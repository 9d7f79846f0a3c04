// What the client remembers about the buckets it uploads to, under $SKYSYNC_STATE_DIR/storage:
// - per upload (bucket place + local source): the tree last uploaded (with the recipes of large files, so a changed
//   one sends only its changed parts), the objects it put (key, size, version) and the version of the bucket's
//   manifest it wrote. While the manifest still has that version, the bucket holds what this state says.
// - buckets.json: the buckets skysync created (what `skysync storage ls` shows and `storage delete` may delete).

import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { NativeAddon, Tree } from '@skysync/chunking';
import { stateRoot } from '@skysync/transport';

/** An object this client put: [size, version (ETag or generation)]. */
export type PutRecord = [size: number, etag: string];

export interface UploadState {
  /** The manifest version this client wrote last (null: none yet). */
  manifestEtag: string | null;
  objects: Map<string, PutRecord>;
  tree: Tree | null;
}

export function storageStateRoot(): string {
  return path.join(stateRoot(), 'storage');
}

export function uploadStateDir(place: string, source: string): string {
  const id = createHash('sha256').update(`${place}\0${source}`).digest('hex').slice(0, 32);
  return path.join(storageStateRoot(), 'uploads', id);
}

export async function loadUploadState(dir: string, native: NativeAddon): Promise<UploadState> {
  const empty: UploadState = { manifestEtag: null, objects: new Map(), tree: null };
  try {
    const saved = JSON.parse(await fsp.readFile(path.join(dir, 'state.json'), 'utf8')) as { manifestEtag?: unknown; objects?: Record<string, PutRecord> };
    const tree = native.Tree.load(path.join(dir, 'tree.snap'));
    return { manifestEtag: typeof saved.manifestEtag === 'string' ? saved.manifestEtag : null, objects: new Map(Object.entries(saved.objects ?? {})), tree };
  } catch {
    // Nothing saved or damaged: the next upload compares against a listing of the bucket instead.
    return empty;
  }
}

/** Saves the tree, then state.json; written by rename so a crash leaves the old state or the new one. */
export async function saveUploadState(dir: string, state: UploadState): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const tmp = `${dir}/.tmp-${process.pid}`;
  state.tree?.save(`${tmp}.snap`);
  await fsp.rename(`${tmp}.snap`, path.join(dir, 'tree.snap'));
  await fsp.writeFile(`${tmp}.json`, JSON.stringify({ manifestEtag: state.manifestEtag, objects: Object.fromEntries(state.objects) }));
  await fsp.rename(`${tmp}.json`, path.join(dir, 'state.json'));
}

/** A bucket skysync created. */
export interface CreatedBucket {
  /** `s3://NAME` or `gs://NAME`. */
  uri: string;
  createdAt: string;
  persistent: boolean;
  /** The local sources uploaded to it. */
  sources: string[];
}

function registryPath(): string {
  return path.join(storageStateRoot(), 'buckets.json');
}

export async function createdBuckets(): Promise<CreatedBucket[]> {
  try {
    const list = JSON.parse(await fsp.readFile(registryPath(), 'utf8')) as unknown;
    return Array.isArray(list) ? (list as CreatedBucket[]) : [];
  } catch {
    return [];
  }
}

async function writeRegistry(list: CreatedBucket[]): Promise<void> {
  await fsp.mkdir(storageStateRoot(), { recursive: true });
  const tmp = `${registryPath()}.tmp-${process.pid}`;
  await fsp.writeFile(tmp, `${JSON.stringify(list, null, 2)}\n`);
  await fsp.rename(tmp, registryPath());
}

/** Records a bucket skysync created, or adds a source to one it knows. */
export async function recordCreatedBucket(entry: CreatedBucket): Promise<void> {
  const list = await createdBuckets();
  const known = list.find((b) => b.uri === entry.uri);
  if (known) known.sources = [...new Set([...known.sources, ...entry.sources])];
  else list.push(entry);
  await writeRegistry(list);
}

export async function forgetCreatedBucket(uri: string): Promise<void> {
  await writeRegistry((await createdBuckets()).filter((b) => b.uri !== uri));
}
