// Uploading one local directory to one place of a bucket (its root or a prefix), incrementally.
//
// The client keeps what it put (state.ts) and the version of the place's manifest it wrote (manifest.ts). When the
// manifest still has that version, nobody else uploaded there since: the scan's changes alone say what to put and
// delete, and an unchanged source costs one HEAD. Otherwise (first upload, lost state, another client wrote) the
// place is listed and compared. The manifest is written only on the version read; a lost race re-lists and
// retries, so two clients never record a view the bucket does not hold.

import path from 'node:path';
import type { Change, NativeAddon, Tree } from '@skysync/chunking';
import { displayPath } from '@skysync/protocol';
import { type ObjectInfo, type ObjectPart, type ObjectStore, StoreError } from '@skysync/store';
import { type Manifest, manifestVersion, readManifest, writeManifest } from './manifest.js';
import { deltaParts, fileParts } from './parts.js';
import { type PutRecord, loadUploadState, saveUploadState, uploadStateDir } from './state.js';
import { mapLimit } from './util.js';

export interface UploadStats {
  filesScanned: number;
  /** Objects listed in the bucket (0 when the client's view was current). */
  objectsListed: number;
  objectsUploaded: number;
  objectsUnchanged: number;
  objectsDeleted: number;
  bytesSent: number;
  /** Bytes the store copied inside the bucket instead of receiving them. */
  bytesCopied: number;
  /** Manifest writes lost to another client (each followed by a listing and another try). */
  manifestRetries: number;
}

export function emptyUploadStats(): UploadStats {
  return { filesScanned: 0, objectsListed: 0, objectsUploaded: 0, objectsUnchanged: 0, objectsDeleted: 0, bytesSent: 0, bytesCopied: 0, manifestRetries: 0 };
}

export interface DirUpload {
  store: ObjectStore;
  /** Key prefix in the bucket (`''` or `name/`). */
  prefix: string;
  source: string;
  native: NativeAddon;
  /** Creates the bucket when missing; called before the first listing. */
  ensureBucket: () => Promise<void>;
  warn: (message: string) => void;
  concurrency: number;
  stats: UploadStats;
}

/** Files at least this large are chunked, so that a later change sends only its changed parts. */
const LARGE_FILE = 16 * 1024 * 1024;
const MAX_ATTEMPTS = 6;
const CHUNK_BATCH = 2000;

interface Plan {
  put: string[];
  remove: string[];
}

/** Object key (relative to the place) of a tree path; null for a name that is not UTF-8. */
function keyOf(treePath: string): string | null {
  const key = displayPath(treePath);
  return Buffer.from(key, 'utf8').toString('latin1') === treePath ? key : null;
}

/** The tree's files by object key (symlinks are not uploaded, as `aws s3 sync --no-follow-symlinks` does). */
function filesOf(tree: Tree, warn: (m: string) => void): Map<string, { treePath: string; size: number }> {
  const files = new Map<string, { treePath: string; size: number }>();
  for (const entry of tree.entries()) {
    if (entry.kind !== 'file') continue;
    const key = keyOf(entry.path);
    if (key === null) warn(`${displayPath(entry.path)}: the name is not UTF-8, which object keys must be; skipped`);
    else files.set(key, { treePath: entry.path, size: entry.size });
  }
  return files;
}

/** What must go when the view is current: every changed file up, every object of ours without a file gone. */
function planFromChanges(files: Map<string, unknown>, ours: Map<string, PutRecord>, changed: Set<string>): Plan {
  return { put: [...changed].filter((key) => files.has(key)), remove: [...ours.keys()].filter((key) => !files.has(key)) };
}

/** What must go against a listing: every file whose object is not what we put, every object skysync owns without a file gone. */
function planFromListing(files: Map<string, unknown>, mine: Map<string, PutRecord>, listed: Map<string, ObjectInfo>, owned: Manifest | null): Plan {
  const isMine = (key: string, info: ObjectInfo | undefined) => {
    const record = mine.get(key);
    return info !== undefined && record !== undefined && record[1] === info.etag && record[0] === info.size;
  };
  const put = [...files.keys()].filter((key) => !isMine(key, listed.get(key)));
  const ownedKeys = new Set([...(owned?.objects.keys() ?? []), ...[...mine.keys()].filter((key) => isMine(key, listed.get(key)))]);
  const remove = [...ownedKeys].filter((key) => !files.has(key) && listed.has(key));
  return { put, remove };
}

async function listPlace(upload: DirUpload): Promise<Map<string, ObjectInfo>> {
  const listed = new Map<string, ObjectInfo>();
  for await (const info of upload.store.list(upload.prefix)) listed.set(info.key.slice(upload.prefix.length), info);
  upload.stats.objectsListed += listed.size;
  return listed;
}

/**
 * Cuts the recipes of changed files (the old recipe as a hint). The scan reports a file without a recipe as changed,
 * so every file needs one; a large file's recipe also says, next time, which of its parts changed.
 */
async function chunkChanged(upload: DirUpload, tree: Tree, changes: Change[]): Promise<{ unreadable: Set<string>; same: Set<string> }> {
  const unreadable = new Set<string>();
  // Reported again only because its stat data cannot vouch for it (written within the scan's clock granularity).
  const same = new Set<string>();
  const files = changes.filter((c) => c.status !== 'deleted' && c.entry.kind === 'file');
  for (let at = 0; at < files.length; at += CHUNK_BATCH) {
    const batch = files.slice(at, at + CHUNK_BATCH);
    const hints = batch.map((c) => c.prevRecipe?.chunks ?? null);
    const outcomes = await upload.native.chunkFiles(
      upload.source,
      batch.map((c) => c.entry.path),
      null,
      hints.some((h) => h !== null) ? hints : null,
    );
    outcomes.forEach((outcome, i) => {
      const treePath = batch[i]!.entry.path;
      if (!outcome.recipe || !tree.setRecipe(treePath, outcome.recipe.chunks)) {
        tree.forget(treePath);
        unreadable.add(treePath);
        upload.warn(`${displayPath(treePath)}: ${outcome.error ?? 'changed while it was read'}; skipped, the bucket keeps its copy`);
      } else if (batch[i]!.prevRecipe?.digest.equals(outcome.recipe.digest)) {
        same.add(treePath);
      }
    });
  }
  return { unreadable, same };
}

interface PutContext {
  upload: DirUpload;
  tree: Tree;
  /** The tree the recipes of the stored versions come from. */
  previous: Tree | null;
  /** The versions this client put before (a delta may copy from them). */
  before: Map<string, PutRecord>;
  listed: Map<string, ObjectInfo> | null;
}

async function putFile(ctx: PutContext, key: string, file: { treePath: string; size: number }): Promise<PutRecord> {
  const { upload } = ctx;
  const fullKey = upload.prefix + key;
  const filePath = path.join(upload.source, key);
  const record = ctx.before.get(key);
  const stored = ctx.listed ? ctx.listed.get(key) : undefined;
  const storedIsOurs = record !== undefined && (ctx.listed === null || (stored !== undefined && stored.etag === record[1]));
  const oldRecipe = storedIsOurs ? ctx.previous?.recipe(file.treePath) : null;
  const newRecipe = file.size >= LARGE_FILE ? ctx.tree.recipe(file.treePath) : null;
  let parts: ObjectPart[] = fileParts(filePath, file.size);
  if (record && oldRecipe && newRecipe) parts = deltaParts(fullKey, record[1], oldRecipe.chunks, filePath, newRecipe.chunks);
  let result: Awaited<ReturnType<ObjectStore['put']>>;
  try {
    result = await upload.store.put(fullKey, parts);
  } catch (error) {
    // The stored version the copies came from was replaced meanwhile: send the whole file instead.
    if (!(error instanceof StoreError) || error.kind !== 'precondition' || parts.every((p) => p.kind !== 'copy')) throw error;
    result = await upload.store.put(fullKey, fileParts(filePath, file.size));
  }
  upload.stats.objectsUploaded++;
  upload.stats.bytesSent += result.bytesSent;
  upload.stats.bytesCopied += result.bytesCopied;
  return [result.info.size, result.info.etag];
}

/** Uploads `upload.source` to its place; resolves once the bucket and its manifest hold the source. */
export async function uploadDir(upload: DirUpload): Promise<void> {
  const place = `${upload.store.uri.scheme}://${upload.store.uri.bucket}/${upload.prefix}`;
  const stateDir = uploadStateDir(place, upload.source);
  const state = await loadUploadState(stateDir, upload.native);
  const scanned = await upload.native.scan(upload.source, state.tree);
  for (const w of scanned.warnings) upload.warn(`${displayPath(w.path) || '.'}: ${w.message}`);
  const tree = scanned.tree;
  const files = filesOf(tree, upload.warn);
  upload.stats.filesScanned += files.size;
  const changed = new Set<string>();
  for (const c of scanned.changes) {
    const key = keyOf(c.entry.path);
    if (key !== null && c.entry.kind === 'file' && c.status !== 'deleted') changed.add(key);
  }
  // A file that could not be read is left as the bucket has it: neither sent nor deleted.
  const { unreadable, same } = await chunkChanged(upload, tree, scanned.changes);
  for (const treePath of same) changed.delete(keyOf(treePath) ?? '');
  const kept = new Map<string, PutRecord>();
  for (const treePath of unreadable) {
    const key = keyOf(treePath) ?? '';
    files.delete(key);
    changed.delete(key);
    const record = state.objects.get(key);
    if (record) kept.set(key, record);
  }

  // What this client put that still holds the local content.
  const mine = new Map([...state.objects].filter(([key]) => !changed.has(key)));
  let viewEtag = state.manifestEtag !== null && state.tree ? await manifestVersion(upload.store, upload.prefix).catch(() => null) : null;
  let current = viewEtag !== null && viewEtag === state.manifestEtag;
  if (current && changed.size === 0 && [...state.objects.keys()].every((key) => files.has(key))) {
    upload.stats.objectsUnchanged += files.size;
    return;
  }
  // Recipes and versions a delta may copy from: the last upload's, then (after a lost race) this one's.
  let previous = state.tree;
  let before = state.objects;
  const sent = new Set<string>();
  for (let attempt = 1; ; attempt++) {
    let listed: Map<string, ObjectInfo> | null = null;
    let owned: Manifest | null = null;
    if (!current) {
      await upload.ensureBucket();
      const stored = await readManifest(upload.store, upload.prefix);
      viewEtag = stored?.etag ?? null;
      owned = stored?.manifest ?? null;
      listed = await listPlace(upload);
    }
    const plan = listed ? planFromListing(files, mine, listed, owned) : planFromChanges(files, state.objects, changed);
    const ctx: PutContext = { upload, tree, previous, before, listed };
    await mapLimit(plan.put, upload.concurrency, async (key) => {
      mine.set(key, await putFile(ctx, key, files.get(key)!));
      sent.add(key);
    });
    plan.remove = plan.remove.filter((key) => !kept.has(key));
    if (plan.remove.length > 0) await upload.store.remove(plan.remove.map((key) => upload.prefix + key));
    upload.stats.objectsDeleted += plan.remove.length;
    const manifest: Manifest = { objects: new Map([...files.keys()].flatMap((key) => (mine.has(key) ? [[key, mine.get(key)!] as const] : []))) };
    for (const [key, record] of kept) manifest.objects.set(key, record);
    try {
      const etag = await writeManifest(upload.store, upload.prefix, manifest, viewEtag);
      await saveUploadState(stateDir, { manifestEtag: etag, objects: manifest.objects, tree });
      upload.stats.objectsUnchanged += files.size - sent.size;
      return;
    } catch (error) {
      if (!(error instanceof StoreError) || error.kind !== 'precondition' || attempt >= MAX_ATTEMPTS) throw error;
      // Another client wrote the place meanwhile: look at what the bucket holds now and try again.
      upload.stats.manifestRetries++;
      current = false;
      previous = tree;
      before = new Map(mine);
    }
  }
}
