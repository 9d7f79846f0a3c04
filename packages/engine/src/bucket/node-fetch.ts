// One node's bucket fetch over its agent session (docs/PROTOCOL.md, "Bucket fetch"): send the listing page by page
// as the store gives it; for each want the node answers (what it lacks among the objects it could settle), send
// read grants at once, so the node fetches the first objects while the bucket is still being listed; then read
// its result.

import {
  type BucketBegin,
  BucketDone,
  type BucketGrants,
  type BucketObjects,
  BucketProgress,
  BucketWant,
  type DeleteMode,
  type FileFailure,
  Frame,
  ProtocolError,
  frameName,
  trace,
} from '@skysync/protocol';
import { type Session, nextFrame } from '../session.js';
import type { GrantMaker } from './grants.js';
import type { BucketListing, ListedObject } from './listing.js';

/** Batches stay far below the protocol's 16 MiB frame limit, whatever the keys' lengths. */
const BATCH_BYTES = 4 * 1024 * 1024;

/** How far one node's fetch is (objects and bytes), for the progress display. */
export interface BucketProgressEvent {
  /** Objects the node asked for so far, and their bytes (grows while the listing comes). */
  objectsWanted: number;
  bytesWanted: number;
  fetched: number;
  bytesFetched: number;
  failed: number;
  /** The listing is complete and every want is in: the totals are final. */
  settled: boolean;
}

export interface NodeFetchRequest {
  session: Session;
  dest: string;
  listing: BucketListing;
  grants: GrantMaker;
  deleteMode: DeleteMode;
  dryRun: boolean;
  onProgress?: (p: BucketProgressEvent) => void;
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
  /** Objects that could not be fetched or placed (refused keys not counted): listed in the mount's `failed`. */
  failed: number;
  /** Gone from the bucket, left in place by --no-delete. */
  stale: number;
}

export interface NodeFetchResult {
  stats: BucketStats;
  kept: string[];
  failed: FileFailure[];
  durationMs: number;
}

/** Sends `items` as frames of at most BATCH_BYTES (estimated from each item's size), the last with more: `last`. */
async function sendBatches<T>(session: Session, type: Frame, items: T[], size: (t: T) => number, frame: (batch: T[], more: boolean) => unknown, more = false): Promise<void> {
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
  if (batch.length || !more) await session.conn.sendJson(type, frame(batch, more));
}

/** Grants made at once before a batch goes out: small first batches get a node going while the rest are signed. */
const FIRST_GRANTS = 16;
const MOST_GRANTS = 512;

type Granted = BucketGrants['grants'][0];
const grantSize = (g: Granted): number => (g.path.length + g.grant.url.length + JSON.stringify(g.grant.headers).length) * 6 + 256;

/** Sends a read grant for each path (more: true); a path that cannot be granted is a failure of its own. */
async function sendGrants(req: NodeFetchRequest, paths: string[], failed: FileFailure[]): Promise<void> {
  const { session, listing } = req;
  let at = 0;
  let n = FIRST_GRANTS;
  while (at < paths.length) {
    const slice = paths.slice(at, at + n);
    at += slice.length;
    n = Math.min(n * 4, MOST_GRANTS);
    const granted: Granted[] = [];
    await Promise.all(
      slice.map(async (p) => {
        const info = listing.infoOf(p);
        try {
          if (!info) throw new Error('not in the listing');
          granted.push({ path: p, grant: await req.grants.grant(listing.keyOf(p), info) });
        } catch (e) {
          failed.push({ path: p, error: (e as Error).message });
        }
      }),
    );
    await sendBatches(session, Frame.BucketGrants, granted, grantSize, (batch, more) => ({ grants: batch, more }) satisfies BucketGrants, true);
  }
}

export function sourceOf(listing: BucketListing): string {
  const { uri } = listing;
  return `${uri.scheme}://${uri.bucket}${uri.prefix ? `/${uri.prefix}` : ''}`;
}

export async function fetchOnNode(req: NodeFetchRequest): Promise<NodeFetchResult> {
  const t0 = Date.now();
  const { session, listing } = req;
  const source = sourceOf(listing);
  const begin: BucketBegin = {
    op: 'bucket',
    dest: req.dest,
    source,
    file: listing.kind === 'object',
    deleteMode: req.deleteMode,
    dryRun: req.dryRun,
    ...(req.onProgress ? { progress: true } : {}),
  };
  await session.conn.sendJson(Frame.Begin, begin);
  let listed = 0;
  // The listing goes out as it comes; a listing that fails part way ends the operation on the node (an error
  // frame) before it deletes anything, and is what this fetch reports.
  let listingError: unknown = null;
  const sending = (async () => {
    const pages = listing.pages()[Symbol.asyncIterator]();
    for (;;) {
      let page: IteratorResult<ListedObject[]>;
      try {
        page = await pages.next();
      } catch (e) {
        listingError = e;
        await session.conn.sendJson(Frame.Error, { message: `the listing of ${source} failed`, code: 'listing' }).catch(() => {});
        return;
      }
      const objects = (page.done ? [] : page.value).map((o) => ({ path: o.path, size: o.info.size, version: o.info.etag }));
      listed += objects.length;
      // Every page but the last says more: the end is known only when the listing is. A write that fails (the
      // agent ended the operation) is said by the agent's own error, read below.
      const more = !page.done;
      const sent = await sendBatches(
        session,
        Frame.BucketObjects,
        objects,
        (o) => o.path.length * 6 + 64,
        (batch, m) => ({ objects: batch, more: m }) satisfies BucketObjects,
        more,
      ).then(
        () => true,
        () => false,
      );
      if (!sent || page.done) break;
    }
    trace(`bucket ${source}: listing sent (${listed})`);
  })();

  const failed: FileFailure[] = [];
  let refused = 0;
  const progress: BucketProgressEvent = { objectsWanted: 0, bytesWanted: 0, fetched: 0, bytesFetched: 0, failed: 0, settled: false };
  const report = (): void => req.onProgress?.({ ...progress });
  let done: BucketDone;
  try {
    for (;;) {
      const f = await nextFrame(session, `fetching ${source}`);
      if (f.type === Frame.BucketWant) {
        const want = BucketWant.decode(f.payload);
        refused += want.refused.length;
        progress.objectsWanted += want.fetch.length;
        for (const p of want.fetch) progress.bytesWanted += req.listing.infoOf(p)?.size ?? 0;
        if (!want.more) progress.settled = true;
        report();
        if (!req.dryRun) {
          await sendGrants(req, want.fetch, failed);
          if (!want.more) await session.conn.sendJson(Frame.BucketGrants, { grants: [], more: false } satisfies BucketGrants);
        }
      } else if (f.type === Frame.BucketProgress) {
        const p = BucketProgress.decode(f.payload);
        progress.fetched = p.fetched;
        progress.bytesFetched = p.bytesFetched;
        progress.failed = p.failed;
        report();
      } else if (f.type === Frame.Done) {
        done = BucketDone.decode(f.payload);
        break;
      } else {
        throw new ProtocolError(`fetching ${source}: unexpected ${frameName(f.type)} frame`);
      }
    }
  } catch (e) {
    // Not waiting for the listing to end: the node is done with this operation (its error says why, or the
    // listing's own failure, which ended it).
    sending.catch(() => {});
    throw listingError ?? e;
  }
  await sending;
  trace(`bucket ${source}: done`);
  progress.fetched = done.fetched;
  progress.bytesFetched = done.bytesFetched;
  progress.failed = done.failed.length;
  report();
  // A path this side could not grant is also the node's "no read grant came": said once, as this side knows it.
  const ungranted = new Set(failed.map((f) => f.path));
  const allFailed = [...done.failed.filter((f) => !ungranted.has(f.path)), ...failed];
  return {
    stats: {
      source,
      objectsListed: listed,
      fetched: done.fetched,
      skipped: done.skipped,
      bytesFetched: done.bytesFetched,
      deleted: done.deleted,
      refused,
      failed: allFailed.length - refused,
      stale: done.stale,
    },
    kept: done.kept,
    failed: allFailed,
    durationMs: Date.now() - t0,
  };
}
