// `skysync storage ls` and `skysync storage delete NAME`: the buckets skysync created, from the client's record.
// A bucket skysync did not create is never deleted, whatever it holds.

import { type ObjectStore, StoreError, parseStoreUri } from '@skysync/store';
import type { CloudOptions } from '@skysync/store/open';
import { RESERVED_PREFIX } from './manifest.js';
import { type CreatedBucket, createdBuckets, forgetCreatedBucket } from './state.js';
import { StorageError } from './copy.js';

export { createdBuckets as listCreatedBuckets, type CreatedBucket };

/** The record of `name` (`NAME`, `s3://NAME` or `gs://NAME`); a one-line StorageError when skysync did not create it. */
export async function findCreatedBucket(name: string): Promise<CreatedBucket> {
  const buckets = await createdBuckets();
  const matches = buckets.filter((b) => b.uri === name || b.uri.replace(/^[a-z0-9]+:\/\//, '') === name);
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1) throw new StorageError(`${name}: skysync created a bucket of that name in several stores (${matches.map((b) => b.uri).join(', ')}); give the URI`);
  throw new StorageError(`${name}: not a bucket skysync created, so skysync does not delete it (\`skysync storage ls\` lists those; use the cloud's own tools for others)`);
}

async function removeAll(store: ObjectStore): Promise<number> {
  let removed = 0;
  for (const prefix of ['', RESERVED_PREFIX]) {
    let batch: string[] = [];
    for await (const info of store.list(prefix)) {
      batch.push(info.key);
      if (batch.length === 1000) {
        await store.remove(batch);
        removed += batch.length;
        batch = [];
      }
    }
    await store.remove(batch);
    removed += batch.length;
  }
  return removed;
}

export interface DeleteResult {
  uri: string;
  objectsDeleted: number;
  /** The bucket was already gone; only the record was dropped. */
  alreadyGone: boolean;
}

/** Deletes a bucket skysync created, with every object in it, and drops it from the record. */
export async function deleteCreatedBucket(name: string, options: { cloud?: CloudOptions; openStore?: (uri: string) => ObjectStore } = {}): Promise<DeleteResult> {
  const bucket = await findCreatedBucket(name);
  const store = options.openStore ? options.openStore(bucket.uri) : await (await import('@skysync/store/open')).openObjectStore(parseStoreUri(bucket.uri), options.cloud);
  try {
    await store.checkBucket();
  } catch (error) {
    if (error instanceof StoreError && error.kind === 'missing-bucket') {
      await forgetCreatedBucket(bucket.uri);
      return { uri: bucket.uri, objectsDeleted: 0, alreadyGone: true };
    }
    throw error instanceof StoreError ? new StorageError(error.message) : error;
  }
  try {
    const objectsDeleted = await removeAll(store);
    await store.deleteBucket();
    await forgetCreatedBucket(bucket.uri);
    return { uri: bucket.uri, objectsDeleted, alreadyGone: false };
  } catch (error) {
    throw error instanceof StoreError ? new StorageError(error.message) : error;
  }
}
