// A cloud URI file mount (`/data: s3://bucket/prefix`, `gs://...`) as the task sync runs it: listed once by the
// client, then fetched by every node itself, each from the store, with grants from this client (never its
// credentials). What each node did goes into its mount report: a push-shaped summary and the bucket's own counts.

import { type DeleteMode, type FileFailure, trace } from '@skysync/protocol';
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
  /** One line for the mount when the node could not place objects for a reason of its own (its disk, its
   * rights, its network): said once, not once per object. */
  error: string | null;
}

/**
 * Failures that are the node's or its link's, not one object's: every object after the first fails the same way.
 * Told apart by the agent's messages (errno codes, grant.ts's texts).
 */
const NODE_CAUSES: Array<{ test: RegExp; say: string }> = [
  { test: /\bENOSPC\b|no space left|disk filled up/, say: "the node's disk is full there; free space (or mount the bucket on a larger disk) and run again: what was placed stays" },
  { test: /\bEDQUOT\b/, say: "the node's disk quota is used up there; free space and run again: what was placed stays" },
  { test: /\bEROFS\b|read-only file system/i, say: 'the destination is on a read-only file system on the node; mount the bucket elsewhere' },
  { test: /\bEACCES\b|permission denied/i, say: "the node's user may not write there; fix the permissions or mount the bucket elsewhere" },
  {
    test: /refused the read grant \(HTTP 40[13]\)/,
    say: "the store refused the node's reads though it lets this machine list the bucket: a bucket policy may allow reads only from some networks or principals; check it",
  },
  { test: /the read grant expired/, say: 'the read grants expired before the node could use them; run again' },
  {
    test: /the store does not answer|the connection broke/,
    say: 'the node cannot reach the store; check its network, and the endpoint it was given (AWS_ENDPOINT_URL / SKYSYNC_GCS_ENDPOINT)',
  },
];

/** The node's own cause among the failures, as one line, and the failures left to list one by one. */
export function nodeCause(failed: FileFailure[], dest: string): { error: string | null; rest: FileFailure[] } {
  for (const cause of NODE_CAUSES) {
    const hit = failed.filter((f) => cause.test.test(f.error));
    if (!hit.length) continue;
    const first = hit[0]!;
    const rest = failed.filter((f) => !cause.test.test(f.error));
    return { error: `${hit.length} ${hit.length === 1 ? 'object' : 'objects'} not placed at ${dest}: ${cause.say} (${first.path}: ${first.error})`, rest };
  }
  return { error: null, rest: failed };
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
  const cause = nodeCause(r.failed, dest);
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
    failed: cause.rest,
    warnings: [],
    dryRun,
    scan: 'full',
    scanDirs: 0,
    bytesRelay: 0,
  };
  return { stats, bucket: r.stats, error: cause.error };
}
