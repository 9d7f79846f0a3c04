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
  type BucketProgress,
  type BucketWant,
  type Connection,
  Frame,
  ProtocolError,
  frameName,
  parentOf,
  remoteError,
  trace,
} from '@skysync/protocol';
import { resolveRemotePath, type AgentContext } from '../context.js';
import { acquireLock } from '../lock.js';
import { manifestPath } from '../manifest.js';
import { type FetchEvents, type FetchJob, fetchAll, guardPath } from './fetch.js';
import { ListingSorter } from './keys.js';
import { type BucketState, type MountKind, loadBucketState, saveBucketState, standsAsPlaced } from './state.js';

export async function serveBucket(conn: Connection, begin: BucketBegin, ctx: AgentContext): Promise<void> {
  const dest = resolveRemotePath(ctx.home, begin.dest);
  const stateBase = manifestPath(ctx.home, dest).replace(/\.manifest$/, '');
  const stateFile = `${stateBase}.bucket`;
  const lock = await acquireLock(`${stateBase}.lock`, dest);
  try {
    const kind = begin.file ? 'object' : 'prefix';
    const last = await loadBucketState(stateFile, ctx.log);
    trace('agent: bucket state loaded');
    const state = await makeWay(dest, begin.dest, kind, last, begin.dryRun);
    const dir = begin.file ? path.dirname(dest) : dest;
    await makeDir(dir, begin.file ? null : begin.dest, begin.dest);
    const root = await fsp.realpath(dir);
    if (!(await fsp.stat(root)).isDirectory()) throw new Error(notADirectory(begin.file ? null : begin.dest, begin.dest));
    const guard = new RootGuard(root);
    try {
      if (lock.tookOver) sweepDeadLeftovers(guard, { recursive: !begin.file, onError: (rel, e) => ctx.log(`could not remove ${rel}: ${e.message}`) });
      const fetch = new BucketFetch(conn, begin, guard, stateFile, state, kind, begin.file ? path.basename(dest) : null);
      await fetch.run(begin.file ? path.join(root, path.basename(dest)) : root);
    } finally {
      guard.close();
    }
  } finally {
    await lock.release();
  }
}

function notADirectory(dest: string | null, shown: string): string {
  return dest !== null
    ? `${dest} is a file on the node, not a directory; remove it or mount the bucket elsewhere`
    : `a parent directory of ${shown} is a file on the node; remove it or mount elsewhere`;
}

/** Makes `dir` and its parents; `dest`: the destination itself when `dir` is it (a prefix mount), for messages. */
async function makeDir(dir: string, dest: string | null, shown: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { recursive: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTDIR') throw new Error(notADirectory(code === 'EEXIST' ? dest : null, shown));
    throw e;
  }
}

/**
 * The destination as this kind of mount needs it, when an earlier fetch placed the other kind there (the URI's
 * path was an object and is a prefix now, or the other way): what that fetch placed and still stands as placed is
 * removed first. Anything else in the way (a file or directory skysync did not place, or one a job changed) is an
 * error, and nothing is touched. Returns the placed objects to compare with (none after a change of kind).
 */
async function makeWay(dest: string, shown: string, kind: 'object' | 'prefix', last: { objects: BucketState; kind: MountKind }, dryRun: boolean): Promise<BucketState> {
  const changed = last.kind !== null && last.kind !== kind;
  const st = await fsp.lstat(dest).catch(() => undefined);
  const blocked = (kind === 'prefix' && st && !st.isDirectory() && !st.isSymbolicLink()) || (kind === 'object' && st?.isDirectory());
  // A dry run changes nothing, so it cannot show what would come after clearing the way: it says so.
  if (blocked && dryRun && changed)
    throw new Error(
      `${shown}: what an earlier fetch placed there is to be replaced (the bucket has ${kind === 'object' ? 'an object' : 'a directory'} there now); run without --dry-run`,
    );
  if (kind === 'prefix' && st && !st.isDirectory() && !st.isSymbolicLink()) {
    const placed = last.kind === 'object' ? last.objects.get(path.basename(dest)) : undefined;
    if (!placed || !standsAsPlaced(st, placed)) throw new Error(notADirectory(shown, shown));
    await fsp.unlink(dest);
  } else if (kind === 'object' && st?.isDirectory()) {
    if (last.kind === 'prefix') removePlaced(dest, last.objects);
    try {
      if (dryRun) throw new Error('a dry run removes nothing');
      await fsp.rmdir(dest);
    } catch {
      throw new Error(`${shown} is a directory on the node${last.kind === 'prefix' ? ' holding files skysync did not place' : ''}; move it away or mount the object elsewhere`);
    }
  }
  return changed ? new Map() : last.objects;
}

/** Removes the files of `objects` below `dir` that still stand as placed, and the directories that leaves empty. */
function removePlaced(dir: string, objects: BucketState): void {
  const guard = new RootGuard(dir);
  try {
    const emptied = new Set<string>();
    for (const [p, placed] of objects) {
      try {
        if (!standsAsPlaced(guard.lstat(guardPath(p)), placed)) continue;
        guard.unlink(guardPath(p));
        emptied.add(parentOf(p));
      } catch {
        // A parent that is a symlink or a file now: not ours to touch.
      }
    }
    removeEmptyDirs(guard, emptied);
  } finally {
    guard.close();
  }
}

/** Directories a deletion emptied, up to the guard's root (one still holding anything stays). */
function removeEmptyDirs(guard: RootGuard, dirs: Set<string>): void {
  const deepestFirst = [...dirs].sort((a, b) => b.length - a.length);
  for (let d of deepestFirst) {
    while (d !== '') {
      try {
        guard.rmdir(guardPath(d));
      } catch {
        break;
      }
      d = parentOf(d);
    }
  }
}

/** How often a client that asked (`progress`) hears how far the fetch is. */
const PROGRESS_MS = 250;

/** Jobs handed from the frame loop to the fetch workers as grants arrive. */
class JobQueue implements AsyncIterable<FetchJob> {
  private readonly items: FetchJob[] = [];
  private readonly waiting: Array<(r: IteratorResult<FetchJob>) => void> = [];
  private closed = false;

  push(job: FetchJob): void {
    const w = this.waiting.shift();
    if (w) w({ value: job, done: false });
    else this.items.push(job);
  }

  close(): void {
    this.closed = true;
    for (const w of this.waiting.splice(0)) w({ value: undefined, done: true });
  }

  /** The jobs no worker took (fetching stopped early). */
  drain(): FetchJob[] {
    return this.items.splice(0);
  }

  [Symbol.asyncIterator](): AsyncIterator<FetchJob> {
    return {
      next: () => {
        const job = this.items.shift();
        if (job) return Promise.resolve({ value: job, done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.waiting.push(resolve));
      },
    };
  }
}

/** Failures that another object's file or directory caused, which the deletions of this fetch may clear. */
function inTheWay(error: string): boolean {
  return /a directory is in the way|is not a directory/.test(error);
}

class BucketFetch {
  private readonly done: BucketDone = { fetched: 0, skipped: 0, bytesFetched: 0, deleted: 0, kept: [], failed: [], stale: 0 };
  private readonly sorter = new ListingSorter();
  /** Paths asked for whose grants have not come yet. */
  private readonly wanted = new Set<string>();
  private readonly jobs = new JobQueue();
  /** Objects a file or directory placed earlier was in the way of: tried again after the deletions. */
  private readonly blocked: FetchJob[] = [];
  private failedCount = 0;

  constructor(
    private readonly conn: Connection,
    private readonly begin: BucketBegin,
    private readonly guard: RootGuard,
    private readonly stateFile: string,
    private readonly state: BucketState,
    private readonly kind: 'object' | 'prefix',
    /** An object mount: the one object's name in its directory. */
    private readonly onlyName: string | null,
  ) {}

  /** Why fetching stopped before the end (a full disk): every object after is not tried. */
  private stoppedBy: string | null = null;

  async run(shownDest: string): Promise<void> {
    const events: FetchEvents = {
      placed: (p, record, bytes) => {
        this.state.set(p, record);
        this.done.fetched++;
        this.done.bytesFetched += bytes;
      },
      failed: (p, error, job) => {
        if (inTheWay(error)) this.blocked.push(job);
        else this.fail(p, error);
        // A full disk fails every object after this one too: stop, and say it once per object, unfetched.
        if (/\b(ENOSPC|EDQUOT)\b/.test(error)) this.stoppedBy ??= error.match(/\b(ENOSPC|EDQUOT)\b/)![1]!;
      },
      stopped: () => this.stoppedBy !== null,
    };
    const fetching = this.begin.dryRun ? Promise.resolve() : fetchAll(this.guard, this.jobs, events);
    const progress = this.begin.progress && !this.begin.dryRun ? setInterval(() => void this.sendProgress(), PROGRESS_MS) : null;
    try {
      try {
        await this.frames(shownDest);
      } catch (e) {
        // The operation is over (the client's error, a bad frame): what is under way finishes, nothing new starts.
        this.jobs.drain();
        throw e;
      } finally {
        // Whatever ended the frames (the last grant, a broken connection), the workers finish what they hold.
        this.jobs.close();
        await fetching;
      }
      trace('agent: bucket fetched');
      for (const job of this.jobs.drain()) this.fail(job.path, `not fetched: the disk filled up (${this.stoppedBy})`);
      // The client could not grant these (gone from the bucket meanwhile, say): they stay as they are.
      for (const p of this.wanted) this.fail(p, 'no read grant came for it');
      // A refused key keeps whatever an earlier fetch placed under its name: the bucket still has it.
      this.removeGone(this.sorter.listed);
      if (this.blocked.length) {
        // An object where a file or directory of earlier fetches stood (`a` was an object, now `a/b` is; or the
        // other way): the deletions above may have cleared its way.
        const again = this.blocked.splice(0);
        await fetchAll(this.guard, again, { placed: events.placed, failed: (p, error) => this.fail(p, error) });
      }
    } finally {
      if (progress) clearInterval(progress);
      // What was placed is recorded even when the fetch failed part way (a full disk, a lost connection): the next
      // fetch skips it and may delete it, as for any placed file.
      if (!this.begin.dryRun) await saveBucketState(this.stateFile, this.state, this.kind);
      trace('agent: bucket state saved');
    }
    await this.conn.sendJson(Frame.Done, this.done);
  }

  private fail(path: string, error: string): void {
    this.done.failed.push({ path, error });
    this.failedCount++;
  }

  private async sendProgress(): Promise<void> {
    await this.conn
      .sendJson(Frame.BucketProgress, { fetched: this.done.fetched, bytesFetched: this.done.bytesFetched, failed: this.failedCount } satisfies BucketProgress)
      .catch(() => {});
  }

  /**
   * The client's frames: listing batches, each answered with what settled in it (want), and grant batches
   * (interleaved with them), whose jobs go to the workers at once. Ends after the last of both.
   */
  private async frames(shownDest: string): Promise<void> {
    let listed = 0;
    let listingEnded = false;
    let grantsEnded = this.begin.dryRun;
    while (!listingEnded || !grantsEnded) {
      const f = await this.conn.next();
      if (!f) throw new ProtocolError('connection closed during a bucket fetch');
      if (f.type === Frame.Error) throw remoteError(f.payload);
      if (f.type === Frame.BucketObjects && !listingEnded) {
        const batch = BucketObjects.decode(f.payload);
        listed += batch.objects.length;
        for (const o of batch.objects) this.sorter.add(this.onlyName === null ? o : { ...o, path: this.onlyName });
        listingEnded = !batch.more;
        if (listingEnded) {
          trace(`agent: bucket listing received (${listed})`);
          if (this.onlyName !== null && listed !== 1) throw new ProtocolError(`an object mount lists exactly one object, got ${listed}`);
        }
        await this.want(shownDest, listingEnded);
      } else if (f.type === Frame.BucketGrants && !grantsEnded) {
        const batch = BucketGrants.decode(f.payload);
        for (const g of batch.grants) {
          const p = this.onlyName ?? g.path;
          if (!this.wanted.delete(p)) throw new ProtocolError(`a read grant for ${JSON.stringify(g.path)}, which was not asked for`);
          this.jobs.push({ path: p, grant: g.grant });
        }
        if (!batch.more) {
          if (!listingEnded) throw new ProtocolError('the read grants ended before the listing');
          grantsEnded = true;
        }
      } else {
        throw new ProtocolError(`unexpected ${frameName(f.type)} frame during a bucket fetch`);
      }
    }
  }

  /** Compares what settled with what this destination holds, and asks for what has to come. */
  private async want(shownDest: string, end: boolean): Promise<void> {
    const { placeable, refused } = this.sorter.settle(end);
    const fetch: string[] = [];
    for (const o of placeable.values()) {
      const placed = this.state.get(o.path);
      if (placed && placed.version === o.version && placed.size === o.size && standsAsPlaced(this.lstat(o.path), placed)) {
        this.done.skipped++;
        continue;
      }
      fetch.push(o.path);
      if (this.begin.dryRun) {
        this.done.fetched++;
        this.done.bytesFetched += o.size;
      } else {
        this.wanted.add(o.path);
      }
    }
    for (const r of refused) this.fail(r.path, r.error);
    if (end) trace(`agent: bucket compared`);
    await this.conn.sendJson(Frame.BucketWant, { dest: shownDest, fetch, refused, more: !end } satisfies BucketWant);
  }

  private lstat(p: string) {
    try {
      return this.guard.lstat(guardPath(p));
    } catch {
      // A parent that is a symlink or a file now: not as placed.
      return undefined;
    }
  }

  /** Files placed earlier whose objects left the bucket: removed when they stand as placed, else a job's. */
  private removeGone(listed: ReadonlySet<string>): void {
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
        this.fail(p, `could not remove it: ${(e as Error).message}`);
      }
    }
    removeEmptyDirs(this.guard, removedDirs);
  }
}
