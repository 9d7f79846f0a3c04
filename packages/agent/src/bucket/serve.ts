// The agent's side of a bucket fetch (docs/PROTOCOL.md, "Bucket fetch"): take the client's listing, compare it
// with what this destination holds from earlier fetches, ask for grants for what has to come, fetch it from the
// store directly, remove what left the bucket (when it still stands as placed), and record the result. The
// grants stay in this process's memory: no URL, header or token is written anywhere.

import fsp from 'node:fs/promises';
import path from 'node:path';
import { RootGuard, sweepDeadLeftovers } from '@skysync/apply';
import {
  type BucketBegin,
  type BucketDone,
  BucketGrants,
  BucketObjects,
  type BucketObject,
  type BucketWant,
  type Connection,
  type FileFailure,
  Frame,
  ProtocolError,
  parentOf,
} from '@skysync/protocol';
import { resolveRemotePath, type AgentContext } from '../context.js';
import { acquireLock } from '../lock.js';
import { manifestPath } from '../manifest.js';
import { type FetchJob, fetchAll, guardPath } from './fetch.js';
import { sortListing } from './keys.js';
import { type BucketState, loadBucketState, saveBucketState, standsAsPlaced } from './state.js';

export async function serveBucket(conn: Connection, begin: BucketBegin, ctx: AgentContext): Promise<void> {
  const dest = resolveRemotePath(ctx.home, begin.dest);
  const stateBase = manifestPath(ctx.home, dest).replace(/\.manifest$/, '');
  const lock = await acquireLock(`${stateBase}.lock`, dest);
  try {
    const dir = begin.file ? path.dirname(dest) : dest;
    await fsp.mkdir(dir, { recursive: true });
    const root = await fsp.realpath(dir);
    if (!(await fsp.stat(root)).isDirectory()) throw new ProtocolError(`${dir} is not a directory on the remote`);
    const guard = new RootGuard(root);
    try {
      if (lock.tookOver) sweepDeadLeftovers(guard, { recursive: !begin.file, onError: (rel, e) => ctx.log(`could not remove ${rel}: ${e.message}`) });
      await new BucketFetch(conn, begin, ctx, guard, `${stateBase}.bucket`, begin.file ? path.basename(dest) : null).run(begin.file ? path.join(root, path.basename(dest)) : root);
    } finally {
      guard.close();
    }
  } finally {
    await lock.release();
  }
}

class BucketFetch {
  private readonly done: BucketDone = { fetched: 0, skipped: 0, bytesFetched: 0, deleted: 0, kept: [], failed: [], stale: 0 };
  private state: BucketState = new Map();

  constructor(
    private readonly conn: Connection,
    private readonly begin: BucketBegin,
    private readonly ctx: AgentContext,
    private readonly guard: RootGuard,
    private readonly stateFile: string,
    /** An object mount: the one object's name in its directory. */
    private readonly onlyName: string | null,
  ) {}

  async run(shownDest: string): Promise<void> {
    const listing = await this.receiveListing();
    const { placeable, refused } = sortListing(listing);
    this.state = await loadBucketState(this.stateFile, this.ctx.log);
    const fetch: BucketObject[] = [];
    for (const o of placeable.values()) {
      const placed = this.state.get(o.path);
      if (placed && placed.version === o.version && placed.size === o.size && standsAsPlaced(this.lstat(o.path), placed)) this.done.skipped++;
      else fetch.push(o);
    }
    await this.conn.sendJson(Frame.BucketWant, { dest: shownDest, fetch: fetch.map((o) => o.path), refused } satisfies BucketWant);
    this.done.failed.push(...refused);
    if (this.begin.dryRun) {
      this.done.fetched = fetch.length;
      this.done.bytesFetched = fetch.reduce((a, o) => a + o.size, 0);
    } else {
      await fetchAll(this.guard, await this.receiveGrants(new Set(fetch.map((o) => o.path))), {
        placed: (p, record, bytes) => {
          this.state.set(p, record);
          this.done.fetched++;
          this.done.bytesFetched += bytes;
        },
        failed: (p, error) => this.done.failed.push({ path: p, error }),
      });
    }
    // A refused key keeps whatever an earlier fetch placed under its name: the bucket still has it.
    this.removeGone(new Set([...placeable.keys(), ...refused.map((r) => r.path)]));
    if (!this.begin.dryRun) await saveBucketState(this.stateFile, this.state);
    await this.conn.sendJson(Frame.Done, this.done);
  }

  private lstat(p: string) {
    try {
      return this.guard.lstat(guardPath(p));
    } catch {
      // A parent that is a symlink or a file now: not as placed.
      return undefined;
    }
  }

  private async receiveListing(): Promise<BucketObject[]> {
    const objects: BucketObject[] = [];
    for (;;) {
      const batch = BucketObjects.decode((await this.conn.expect(Frame.BucketObjects)).payload);
      objects.push(...batch.objects);
      if (!batch.more) break;
    }
    if (this.onlyName === null) return objects;
    if (objects.length !== 1) throw new ProtocolError(`an object mount lists exactly one object, got ${objects.length}`);
    return [{ ...objects[0]!, path: this.onlyName }];
  }

  /** The grants for `wanted`, from the client's batches; a grant for anything else is refused. */
  private async receiveGrants(wanted: Set<string>): Promise<FetchJob[]> {
    const jobs: FetchJob[] = [];
    for (;;) {
      const batch = BucketGrants.decode((await this.conn.expect(Frame.BucketGrants)).payload);
      for (const g of batch.grants) {
        const p = this.onlyName ?? g.path;
        if (!wanted.delete(p)) throw new ProtocolError(`a read grant for ${JSON.stringify(g.path)}, which was not asked for`);
        jobs.push({ path: p, grant: g.grant });
      }
      if (!batch.more) break;
    }
    // The client could not grant these (gone from the bucket meanwhile, say): they stay as they are.
    for (const p of wanted) this.done.failed.push({ path: p, error: 'no read grant came for it' });
    return jobs;
  }

  /** Files placed earlier whose objects left the bucket: removed when they stand as placed, else a job's. */
  private removeGone(listed: Set<string>): void {
    const removedDirs = new Set<string>();
    for (const [p, placed] of [...this.state]) {
      if (listed.has(p)) continue;
      if (this.begin.deleteMode === 'none') {
        this.done.stale++;
        continue;
      }
      const st = this.lstat(p);
      if (!st) {
        this.state.delete(p);
        continue;
      }
      if (!standsAsPlaced(st, placed)) {
        // A job's file from now on: never removed by a later fetch either.
        this.done.kept.push(p);
        this.state.delete(p);
        continue;
      }
      if (this.begin.dryRun) {
        this.done.deleted++;
        continue;
      }
      try {
        this.guard.unlink(guardPath(p));
        this.state.delete(p);
        this.done.deleted++;
        removedDirs.add(parentOf(p));
      } catch (e) {
        this.done.failed.push({ path: p, error: `could not remove it: ${(e as Error).message}` } satisfies FileFailure);
      }
    }
    this.removeEmptyDirs(removedDirs);
  }

  /** Directories a deletion emptied, up to the destination (one a job still uses is not empty and stays). */
  private removeEmptyDirs(dirs: Set<string>): void {
    const deepestFirst = [...dirs].sort((a, b) => b.length - a.length);
    for (let d of deepestFirst) {
      while (d !== '') {
        try {
          this.guard.rmdir(guardPath(d));
        } catch {
          break;
        }
        d = parentOf(d);
      }
    }
  }
}
