// One node's bucket fetch over its agent session (docs/PROTOCOL.md, "Bucket fetch"): send the listing, read which
// objects the node lacks and which keys it refuses, send a read grant for each one it lacks, read its result.

import { type BucketBegin, BucketDone, type BucketGrants, type BucketObjects, BucketWant, type DeleteMode, type FileFailure, Frame } from '@skysync/protocol';
import { expectFrame, type Session } from '../session.js';
import type { GrantMaker } from './grants.js';
import type { BucketListing } from './listing.js';

/** Batches stay far below the protocol's 16 MiB frame limit, whatever the keys' lengths. */
const BATCH_BYTES = 4 * 1024 * 1024;

export interface NodeFetchRequest {
  session: Session;
  dest: string;
  listing: BucketListing;
  grants: GrantMaker;
  deleteMode: DeleteMode;
  dryRun: boolean;
}

/** What a bucket mount did on one node (the `bucket` object of a mount in --json). */
export interface BucketStats {
  source: string;
  objectsListed: number;
  fetched: number;
  skipped: number;
  bytesFetched: number;
  deleted: number;
  refused: number;
  /** Gone from the bucket, left in place by --no-delete. */
  stale: number;
}

export interface NodeFetchResult {
  stats: BucketStats;
  kept: string[];
  failed: FileFailure[];
  durationMs: number;
}

/** Sends `items` as frames of at most BATCH_BYTES (estimated from each item's size), the last with more: false. */
async function sendBatches<T>(session: Session, type: Frame, items: T[], size: (t: T) => number, frame: (batch: T[], more: boolean) => unknown): Promise<void> {
  let batch: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const n = size(item);
    if (batch.length && bytes + n > BATCH_BYTES) {
      await session.conn.sendJson(type, frame(batch, true));
      batch = [];
      bytes = 0;
    }
    batch.push(item);
    bytes += n;
  }
  await session.conn.sendJson(type, frame(batch, false));
}

export async function fetchOnNode(req: NodeFetchRequest): Promise<NodeFetchResult> {
  const t0 = Date.now();
  const { session, listing } = req;
  const source = `${listing.uri.scheme}://${listing.uri.bucket}${listing.uri.prefix ? `/${listing.uri.prefix}` : ''}`;
  const begin: BucketBegin = { op: 'bucket', dest: req.dest, source, file: listing.kind === 'object', deleteMode: req.deleteMode, dryRun: req.dryRun };
  await session.conn.sendJson(Frame.Begin, begin);
  const objects = listing.objects.map((o) => ({ path: o.path, size: o.info.size, version: o.info.etag }));
  await sendBatches(
    session,
    Frame.BucketObjects,
    objects,
    (o) => o.path.length * 6 + 64,
    (batch, more) => ({ objects: batch, more }) satisfies BucketObjects,
  );
  const want = BucketWant.decode((await expectFrame(session, Frame.BucketWant, `fetching ${source}`)).payload);
  const failed: FileFailure[] = [];
  if (!req.dryRun) {
    const granted: BucketGrants['grants'] = [];
    await Promise.all(
      want.fetch.map(async (p) => {
        try {
          granted.push({ path: p, grant: await req.grants.grant(listing.keyOf(p)) });
        } catch (e) {
          failed.push({ path: p, error: (e as Error).message });
        }
      }),
    );
    const size = (g: (typeof granted)[0]): number => (g.path.length + g.grant.url.length + JSON.stringify(g.grant.headers).length) * 6 + 256;
    await sendBatches(session, Frame.BucketGrants, granted, size, (batch, more) => ({ grants: batch, more }) satisfies BucketGrants);
  }
  const done = BucketDone.decode((await expectFrame(session, Frame.Done, `fetching ${source}`)).payload);
  return {
    stats: {
      source,
      objectsListed: listing.objects.length,
      fetched: done.fetched,
      skipped: done.skipped,
      bytesFetched: done.bytesFetched,
      deleted: done.deleted,
      refused: want.refused.length,
      stale: done.stale,
    },
    kept: done.kept,
    failed: [...done.failed.filter((f) => !failed.some((g) => g.path === f.path)), ...failed],
    durationMs: Date.now() - t0,
  };
}
