// Fetching granted objects into a destination: several objects at once, a large one as parallel ranged reads,
// each into a temp file of its own (made through the root guard, never through a symlink), checked for length
// and version (`streamObject` checks every response against the grant before a byte is written), then renamed
// over the old file. A reader sees the old file or the new one, never a torn one; a failed fetch leaves the old.

import fs from 'node:fs';
import { promisify } from 'node:util';
import { type RootGuard, tempName } from '@skysync/apply';
import { parentOf } from '@skysync/protocol';
import { GrantError, type ReadGrant, streamObject } from '@skysync/store';
import type { PlacedObject } from './state.js';

const MiB = 1024 * 1024;
/**
 * Objects above this come down as parallel ranges of at most this size, of equal sizes. Large ranges: a request
 * costs a store (moto above all, which reads the whole object for every range) more than its bytes do, and 16
 * reads in flight keep a node's link full all the same.
 */
const RANGE = 64 * MiB;
const OBJECTS_AT_ONCE = 16;
/** Reads in flight across all objects (a range or a whole small object each). */
const READS_AT_ONCE = 16;
/** Bytes of a response gathered before they are written (one writev). */
const WRITE_GROUP = 1024 * 1024;
/** Tries of one read whose connection broke or whose store was busy. */
const ATTEMPTS = 4;

const writev = promisify(fs.writev);

export interface FetchJob {
  /** The object's path under the destination (UTF-8, for records and messages). */
  path: string;
  grant: ReadGrant;
}

export interface FetchEvents {
  placed(path: string, record: PlacedObject, bytes: number): void;
  failed(path: string, error: string, job: FetchJob): void;
  /** True: take no more jobs (those under way finish). */
  stopped?(): boolean;
}

/** Runs `work` with at most `n` calls in flight. */
function limiter(n: number): <T>(work: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: Array<() => void> = [];
  return async (work) => {
    if (active >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    active++;
    try {
      return await work();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

/** The guard's name for a UTF-8 path: the receiver names files by their bytes, as latin1 strings. */
export function guardPath(p: string): string {
  return Buffer.from(p, 'utf8').toString('latin1');
}

/**
 * Fetches the jobs as they come (`jobs` yields them batch by batch while the client still signs the later ones),
 * OBJECTS_AT_ONCE at a time.
 */
export async function fetchAll(guard: RootGuard, jobs: AsyncIterable<FetchJob> | Iterable<FetchJob>, events: FetchEvents): Promise<void> {
  const read = limiter(READS_AT_ONCE);
  const source = Symbol.asyncIterator in jobs ? jobs[Symbol.asyncIterator]() : (jobs as Iterable<FetchJob>)[Symbol.iterator]();
  // Workers share one iterator; an async generator answers concurrent next() calls in order.
  const worker = async (): Promise<void> => {
    for (;;) {
      if (events.stopped?.()) return;
      const next = await source.next();
      if (next.done) return;
      const job = next.value;
      try {
        const { record, bytes } = await fetchOne(guard, job, read);
        events.placed(job.path, record, bytes);
      } catch (e) {
        events.failed(job.path, (e as Error).message, job);
      }
    }
  };
  // A bad grant batch ends the fetch, but only once the objects under way are placed or failed: nothing is left
  // writing after the guard closes.
  const ended = await Promise.allSettled(Array.from({ length: OBJECTS_AT_ONCE }, worker));
  for (const e of ended) if (e.status === 'rejected') throw e.reason;
}

function ranges(size: number): Array<{ start: number; end: number } | undefined> {
  if (size <= RANGE) return [undefined];
  const n = Math.ceil(size / RANGE);
  const out: Array<{ start: number; end: number }> = [];
  for (let i = 0; i < n; i++) out.push({ start: Math.floor((size * i) / n), end: Math.floor((size * (i + 1)) / n) });
  return out;
}

/** Failures that may pass: the read is tried again from the first byte not yet written. */
const PASSING = new Set(['unreachable', 'busy', 'short']);

/**
 * One range (or the whole object) into `fd` at its offsets. The response's chunks are written in groups of about
 * WRITE_GROUP bytes with one writev each (no copy into a buffer of ours). A broken connection or a busy store is
 * tried again up to ATTEMPTS times, from the first byte not yet written; anything else (a changed object, a full
 * disk) fails at once.
 */
async function fetchRange(job: FetchJob, fd: number, range: { start: number; end: number } | undefined, read: ReturnType<typeof limiter>): Promise<number> {
  const start = range?.start ?? 0;
  const end = range?.end ?? job.grant.size;
  let written = start;
  for (let attempt = 1; ; attempt++) {
    let group: Uint8Array[] = [];
    let groupBytes = 0;
    const flush = async (): Promise<void> => {
      if (!groupBytes) return;
      const bufs = group;
      const n = groupBytes;
      group = [];
      groupBytes = 0;
      await writevAll(fd, bufs, n, written);
      written += n;
    };
    try {
      const resume = written > start || range !== undefined;
      await read(async () => {
        await streamObject(
          job.grant,
          async (chunk) => {
            group.push(chunk);
            groupBytes += chunk.length;
            if (groupBytes >= WRITE_GROUP) await flush();
          },
          resume ? { range: { start: written, end } } : {},
        );
        await flush();
      });
      return end - start;
    } catch (e) {
      if (!(e instanceof GrantError) || !PASSING.has(e.kind) || attempt >= ATTEMPTS) throw e;
      await new Promise((resolve) => setTimeout(resolve, 200 * 4 ** (attempt - 1)));
    }
  }
}

/** Writes all of `bufs` (`n` bytes) at `position`, going on after a partial write. */
async function writevAll(fd: number, bufs: Uint8Array[], n: number, position: number): Promise<void> {
  let done = 0;
  while (done < n) {
    let rest = bufs;
    if (done > 0) {
      // Rare (a partial write): skip what went out.
      let skip = done;
      rest = [];
      for (const b of bufs) {
        if (skip >= b.length) {
          skip -= b.length;
          continue;
        }
        rest.push(skip ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    done += (await writev(fd, rest, position + done)).bytesWritten;
  }
}

async function fetchOne(guard: RootGuard, job: FetchJob, read: ReturnType<typeof limiter>): Promise<{ record: PlacedObject; bytes: number }> {
  const rel = guardPath(job.path);
  const dir = parentOf(rel);
  guard.ensureDir(dir);
  if (guard.lstat(rel)?.isDirectory()) throw new Error('a directory is in the way of this object');
  const tmp = tempName(dir);
  const fd = guard.createExclusive(tmp);
  let closed = false;
  let renamed = false;
  try {
    const counts = await Promise.all(ranges(job.grant.size).map((range) => fetchRange(job, fd, range, read)));
    const bytes = counts.reduce((a, b) => a + b, 0);
    const size = fs.fstatSync(fd).size;
    if (size !== job.grant.size) throw new Error(`fetched ${size} bytes, the object has ${job.grant.size}`);
    fs.fchmodSync(fd, 0o644);
    closed = true;
    fs.closeSync(fd);
    guard.rename(tmp, rel);
    renamed = true;
    const st = guard.lstat(rel)!;
    return { record: { size: job.grant.size, version: job.grant.etag, mtimeMs: st.mtimeMs, ino: st.ino }, bytes };
  } finally {
    if (!renamed) {
      // Never twice: the number may belong to another file by now.
      if (!closed) fs.closeSync(fd);
      try {
        guard.unlink(tmp);
      } catch {
        // Gone already; a dead process's temp is swept by the next operation that takes over the lock.
      }
    }
  }
}
