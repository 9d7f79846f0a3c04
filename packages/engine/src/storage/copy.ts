// A Storage object with a local source (SkyPilot's `name` + `source` [+ `store`, `mode`, `persistent`]): its source
// is uploaded to the bucket, created when missing, and the nodes then fetch the bucket like any `s3://` / `gs://`
// file_mount (the URI this returns). A single directory lands at the bucket's root; each item of a source list at
// `<basename>/`, as in SkyPilot.

import path from 'node:path';
import fsp from 'node:fs/promises';
import type { NativeAddon } from '@skysync/chunking';
import { type ObjectStore, StoreError, type StoreScheme, StoreUriError, formatStoreUri, parseStoreUri } from '@skysync/store';
import type { CloudOptions } from '@skysync/store/open';
import { markCreated } from './manifest.js';
import { recordCreatedBucket } from './state.js';
import { type UploadStats, emptyUploadStats, uploadDir } from './upload.js';

/** The fields of a task's storage mount (`FileMount` of kind 'storage' in @skysync/task) an upload reads. */
export interface StorageMountSpec {
  /** `file_mounts./data`: what errors name. */
  key: string;
  name: string | null;
  /** Absolute local paths (the task resolved them). */
  sources: string[];
  /** `s3`, `gcs`, ... as the task wrote it (lower case); null: `defaultStore`. */
  store: string | null;
  /** SkyPilot's default is true (absent here: the options', else true). */
  persistent?: boolean;
}

export interface UploadStorageOptions {
  native: NativeAddon;
  /** Endpoints and credentials; default the environment's (AWS_ENDPOINT_URL, SKYSYNC_GCS_ENDPOINT, the SDKs' chains). */
  cloud?: CloudOptions;
  /** The store of a mount that names none (default s3). */
  defaultStore?: 's3' | 'gcs';
  persistent?: boolean;
  /** Objects sent at once (default 10, as `aws s3 sync`). */
  concurrency?: number;
  warn?: (message: string) => void;
  /** For tests: the store to use instead of opening one from the URI. */
  openStore?: (uri: string) => ObjectStore;
}

export interface UploadStorageResult {
  /** What the nodes fetch: `s3://NAME` or `gs://NAME`. */
  uri: string;
  stats: UploadStats & { bucketCreated: boolean };
}

/** A failure of one storage mount: one line naming it. */
export class StorageError extends Error {
  override name = 'StorageError';
}

const SCHEMES: Record<string, StoreScheme> = { s3: 's3', gcs: 'gs' };

function schemeOf(mount: StorageMountSpec, options: UploadStorageOptions): StoreScheme {
  const store = mount.store ?? options.defaultStore ?? 's3';
  const scheme = SCHEMES[store];
  if (!scheme) throw new StorageError(`${mount.key}.store: uploading to store "${store}" is not supported yet; use s3 or gcs`);
  return scheme;
}

async function sourceDirs(mount: StorageMountSpec): Promise<{ source: string; prefix: string }[]> {
  if (mount.sources.length === 0) throw new StorageError(`${mount.key}: no local source to upload`);
  const single = mount.sources.length === 1;
  return Promise.all(
    mount.sources.map(async (source) => {
      const st = await fsp.stat(source).catch(() => null);
      if (!st) throw new StorageError(`${mount.key}.source: ${source} does not exist`);
      if (!st.isDirectory()) throw new StorageError(`${mount.key}.source: ${source} is a file; uploading single files is not supported yet, list its directory instead`);
      return { source, prefix: single ? '' : `${path.basename(source)}/` };
    }),
  );
}

/**
 * Uploads the mount's local sources to its bucket (created when missing and then recorded as skysync's), sending
 * only what changed since the last upload from this machine. Every failure is a StorageError of one line.
 */
export async function uploadStorage(mount: StorageMountSpec, options: UploadStorageOptions): Promise<UploadStorageResult> {
  if (!mount.name) throw new StorageError(`${mount.key}.name: a local source is uploaded to a bucket, and no bucket name is given`);
  const scheme = schemeOf(mount, options);
  let uriText: string;
  try {
    uriText = formatStoreUri(parseStoreUri(`${scheme}://${mount.name}`));
  } catch (error) {
    if (error instanceof StoreUriError) throw new StorageError(`${mount.key}.name: ${error.message}`);
    throw error;
  }
  const store = options.openStore ? options.openStore(uriText) : await (await import('@skysync/store/open')).openObjectStore(parseStoreUri(uriText), options.cloud);
  const stats = { ...emptyUploadStats(), bucketCreated: false };
  const units = await sourceDirs(mount);
  let bucketReady: Promise<void> | null = null;
  const ensureBucket = () => {
    bucketReady ??= ensure(store, mount, options, stats, uriText);
    return bucketReady;
  };
  try {
    for (const unit of units) {
      await uploadDir({ ...unit, store, native: options.native, ensureBucket, warn: options.warn ?? (() => {}), concurrency: options.concurrency ?? 10, stats });
    }
  } catch (error) {
    if (error instanceof StoreError) throw new StorageError(`${mount.key}: ${error.message}`);
    throw error;
  }
  return { uri: uriText, stats };
}

async function ensure(store: ObjectStore, mount: StorageMountSpec, options: UploadStorageOptions, stats: { bucketCreated: boolean }, uri: string): Promise<void> {
  try {
    await store.checkBucket();
    return;
  } catch (error) {
    if (!(error instanceof StoreError) || error.kind !== 'missing-bucket') throw error;
  }
  if ((await store.createBucket()) !== 'created') return;
  stats.bucketCreated = true;
  await markCreated(store);
  await recordCreatedBucket({ uri, createdAt: new Date().toISOString(), persistent: mount.persistent ?? options.persistent ?? true, sources: mount.sources });
}

/** The bucket a Storage object names (`name` in its `store`), created (and recorded as skysync's) when missing. */
export async function bucketForMount(mount: StorageMountSpec, options: Omit<UploadStorageOptions, 'native'> = {}): Promise<string> {
  if (!mount.name) throw new StorageError(`${mount.key}.name: no bucket name is given`);
  const scheme = schemeOf(mount, options as UploadStorageOptions);
  let uriText: string;
  try {
    uriText = formatStoreUri(parseStoreUri(`${scheme}://${mount.name}`));
  } catch (error) {
    if (error instanceof StoreUriError) throw new StorageError(`${mount.key}.name: ${error.message}`);
    throw error;
  }
  const store = options.openStore ? options.openStore(uriText) : await (await import('@skysync/store/open')).openObjectStore(parseStoreUri(uriText), options.cloud);
  try {
    await ensure(store, mount, options as UploadStorageOptions, { bucketCreated: false }, uriText);
  } catch (error) {
    if (error instanceof StoreError) throw new StorageError(`${mount.key}: ${error.message}`);
    throw error;
  }
  return uriText;
}
