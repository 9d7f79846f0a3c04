// A cloud URI file mount (`/data: s3://bucket/prefix`, `gs://...`) as the task sync runs it: listed once by the
// client, then fetched by every node itself, each from the store, with grants from this client (never its
// credentials). What each node did goes into its mount report: a push-shaped summary and the bucket's own counts.

import { type DeleteMode, trace } from '@skysync/protocol';
import type { FileMount } from '@skysync/task';
import type { PushStats } from '../stats.js';
import type { Session } from '../session.js';
import { GrantMaker } from './grants.js';
import { type BucketListing, listMount, openStoreFor } from './listing.js';
import { type BucketProgressEvent, type BucketStats, fetchOnNode } from './node-fetch.js';

export type { BucketProgressEvent, BucketStats } from './node-fetch.js';

export type BucketMount = Extract<FileMount, { kind: 'uri' }>;

/** The schemes a node can fetch from (the others are refused by `taskSources`). */
export const BUCKET_SCHEMES = ['s3', 'gs'];

export interface PreparedBucket {
  listing: BucketListing;
  grants: GrantMaker;
}

/** Lists the mount's URI once for all nodes; a failure is one line naming the mount and the bucket. */
export async function prepareBucketMount(m: BucketMount): Promise<PreparedBucket> {
  const { parseStoreUri } = await import('@skysync/store');
  try {
    const store = await openStoreFor(parseStoreUri(m.uri));
    trace(`bucket ${m.key}: store opened`);
    const listing = await listMount(store);
    trace(`bucket ${m.key}: listing started`);
    return { listing, grants: new GrantMaker(store) };
  } catch (e) {
    throw new Error(`${m.key}: ${(e as Error).message}`);
  }
}

export interface BucketNodeResult {
  stats: PushStats;
  bucket: BucketStats;
}

export async function fetchBucketMount(
  session: Session,
  dest: string,
  p: PreparedBucket,
  deleteMode: DeleteMode,
  dryRun: boolean,
  onProgress?: (e: BucketProgressEvent) => void,
): Promise<BucketNodeResult> {
  const r = await fetchOnNode({ session, dest, listing: p.listing, grants: p.grants, deleteMode, dryRun, ...(onProgress ? { onProgress } : {}) });
  const all = await p.listing.complete();
  // The bytes went from the store to the node: none crossed this client's link, hence no literal or wire bytes.
  const stats: PushStats = {
    filesScanned: r.stats.objectsListed,
    filesChanged: r.stats.fetched,
    filesDeleted: r.stats.deleted,
    bytesLiteral: 0,
    bytesWire: 0,
    chunksReused: 0,
    durationMs: r.durationMs,
    transport: 'bucket',
    bytesTotal: all.reduce((a, o) => a + o.info.size, 0),
    chunksLiteral: 0,
    scanMs: 0,
    generation: null,
    drift: [],
    kept: r.kept,
    failed: r.failed,
    warnings: [],
    dryRun,
    scan: 'full',
    scanDirs: 0,
    bytesRelay: 0,
  };
  return { stats, bucket: r.stats };
}
