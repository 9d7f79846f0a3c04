// Fetching granted objects into a destination: several objects at once, a large one as parallel ranged reads,
// each into a temp file of its own (made through the root guard, never through a symlink), checked for length
// and version (`streamObject` checks every response against the grant before a byte is written), then renamed
// over the old file. A reader sees the old file or the new one, never a torn one; a failed fetch leaves the old.

import fs from 'node:fs';
import { promisify } from 'node:util';
import { type RootGuard, tempName } from '@skysync/apply';
import { parentOf } from '@skysync/protocol';
import { type ReadGrant, streamObject } from '@skysync/store';
import type { PlacedObject } from './state.js';

const MiB = 1024 * 1024;
/** Objects above this come down as parallel ranges of RANGE bytes. */
const RANGED_ABOVE = 32 * MiB;
const RANGE = 16 * MiB;
const OBJECTS_AT_ONCE = 16;
/** Reads in flight across all objects (a range or a whole small object each). */
const READS_AT_ONCE = 16;

const write = promisify(fs.write);

export interface FetchJob {
  /** The object's path under the destination (UTF-8, for records and messages). */
  path: string;
  grant: ReadGrant;
}

export interface FetchEvents {
  placed(path: string, record: PlacedObject, bytes: number): void;
  failed(path: string, error: string): void;
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

export async function fetchAll(guard: RootGuard, jobs: FetchJob[], events: FetchEvents): Promise<void> {
  const read = limiter(READS_AT_ONCE);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const job = jobs[next++]!;
      try {
        const { record, bytes } = await fetchOne(guard, job, read);
        events.placed(job.path, record, bytes);
      } catch (e) {
        events.failed(job.path, (e as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(OBJECTS_AT_ONCE, jobs.length) }, worker));
}

function ranges(size: number): Array<{ start: number; end: number } | undefined> {
  if (size <= RANGED_ABOVE) return [undefined];
  const out: Array<{ start: number; end: number }> = [];
  for (let start = 0; start < size; start += RANGE) out.push({ start, end: Math.min(size, start + RANGE) });
  return out;
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
    const counts = await Promise.all(
      ranges(job.grant.size).map((range) =>
        read(async () => {
          let position = range?.start ?? 0;
          return streamObject(
            job.grant,
            async (chunk) => {
              const at = position;
              position += chunk.length;
              await write(fd, chunk, 0, chunk.length, at);
            },
            range ? { range } : {},
          );
        }),
      ),
    );
    const bytes = counts.reduce((a, b) => a + b, 0);
    if (fs.fstatSync(fd).size !== job.grant.size) throw new Error(`fetched ${fs.fstatSync(fd).size} bytes, the object has ${job.grant.size}`);
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
