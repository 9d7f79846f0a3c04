// skysync's own objects in a bucket, all under the reserved prefix `.skysync/` (the rest of the bucket holds plain
// objects under their paths, usable by anyone):
// - `.skysync/bucket.json`: written once when skysync created the bucket (who may delete it).
// - `.skysync/manifests/<id>.json`: per place uploaded to (bucket root or a prefix), the objects skysync put there
//   with their size and version. It is the shared view of every client uploading to that place: each writes it
//   only on the version it read (If-Match / ifGenerationMatch), so a client that lost a race learns it and
//   re-lists instead of overwriting the other's record; and only what it lists is ever deleted by skysync.

import { createHash } from 'node:crypto';
import type { ObjectStore } from '@skysync/store';
import type { PutRecord } from './state.js';

export const RESERVED_PREFIX = '.skysync/';
export const BUCKET_MARKER = `${RESERVED_PREFIX}bucket.json`;

export interface Manifest {
  /** Object keys relative to the place, with what was put there. */
  objects: Map<string, PutRecord>;
}

export interface StoredManifest {
  manifest: Manifest;
  etag: string;
}

export function manifestKey(prefix: string): string {
  return `${RESERVED_PREFIX}manifests/${createHash('sha256').update(prefix).digest('hex').slice(0, 24)}.json`;
}

async function readText(store: ObjectStore, key: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of (await store.read(key)) as AsyncIterable<Buffer>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks).toString('utf8');
}

/** The manifest's version alone: the one request an unchanged upload makes. */
export async function manifestVersion(store: ObjectStore, prefix: string): Promise<string | null> {
  return (await store.head(manifestKey(prefix)))?.etag ?? null;
}

export async function readManifest(store: ObjectStore, prefix: string): Promise<StoredManifest | null> {
  const key = manifestKey(prefix);
  const info = await store.head(key);
  if (!info) return null;
  try {
    const parsed = JSON.parse(await readText(store, key)) as { objects?: Record<string, PutRecord> };
    return { manifest: { objects: new Map(Object.entries(parsed.objects ?? {})) }, etag: info.etag };
  } catch {
    // Unreadable (damaged or replaced meanwhile): owns nothing; the conditional write below still protects it.
    return { manifest: { objects: new Map() }, etag: info.etag };
  }
}

/** Writes the manifest on the version read (null: none may exist); a lost race is a StoreError 'precondition'. */
export async function writeManifest(store: ObjectStore, prefix: string, manifest: Manifest, readEtag: string | null): Promise<string> {
  const body = Buffer.from(JSON.stringify({ format: 1, prefix, objects: Object.fromEntries([...manifest.objects].sort(([a], [b]) => (a < b ? -1 : 1))) }));
  const condition = readEtag === null ? { ifAbsent: true as const } : { ifMatch: readEtag };
  const result = await store.put(manifestKey(prefix), [{ kind: 'bytes', data: body }], { condition });
  return result.info.etag;
}

/** Marks a bucket skysync just created; a marker already there (a concurrent creator) is kept. */
export async function markCreated(store: ObjectStore): Promise<void> {
  const body = Buffer.from(JSON.stringify({ createdBy: 'skysync', createdAt: new Date().toISOString() }));
  try {
    await store.put(BUCKET_MARKER, [{ kind: 'bytes', data: body }], { condition: { ifAbsent: true } });
  } catch (error) {
    if ((error as { kind?: string }).kind !== 'precondition') throw error;
  }
}

export async function isMarkedCreated(store: ObjectStore): Promise<boolean> {
  return (await store.head(BUCKET_MARKER)) !== null;
}
