// The flush barrier: waits until a mount's rclone has nothing queued or uploading, reading its own counters
// (rc vfs/stats) rather than its log, so it costs one local request when nothing is pending and covers exactly
// this mount's writes. Uploads that keep failing end the wait with the files named; they stay queued on the
// node (nothing is dropped) for the next flush.

import fs from 'node:fs';
import path from 'node:path';
import type { FuseEvent } from '@skysync/protocol';
import { rc } from './rclone.js';
import { type FuseRecord, logFile, mountDir, recordAlive } from './records.js';

export type FlushOutcome = { ok: true; dead?: undefined } | { ok: false; error: string; dead?: boolean };

interface VfsStats {
  diskCache?: { uploadsInProgress?: number; uploadsQueued?: number; erroredFiles?: number; outOfSpace?: boolean };
}

interface CoreStats {
  speed?: number;
  transferring?: Array<{ size?: number; bytes?: number }>;
}

/** An upload retried this many times is reported, not waited for further. */
const FAILED_TRIES = 3;
const POLL_MS = 100;
const PROGRESS_EVERY_MS = 1000;

function logSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/** Files whose upload rclone has retried FAILED_TRIES times since `from` in its log, with its reason. */
function failingUploads(file: string, from: number): Map<string, string> {
  const failing = new Map<string, string>();
  let text = '';
  try {
    const fd = fs.openSync(file, 'r');
    const size = fs.fstatSync(fd).size;
    const start = Math.max(from, size - 1024 * 1024);
    const buf = Buffer.alloc(Math.max(0, size - start));
    fs.readSync(fd, buf, 0, buf.length, start);
    fs.closeSync(fd);
    text = buf.toString('utf8');
  } catch {
    return failing;
  }
  for (const line of text.split('\n')) {
    const m = /ERROR : (.+?): vfs cache: failed to upload try #(\d+)[^:]*: (.*)$/.exec(line);
    if (m && Number(m[2]) >= FAILED_TRIES) failing.set(m[1]!, m[3]!.slice(0, 200));
  }
  return failing;
}

/**
 * Files a job's write failed on since the last flush (rclone logs "IO error: write <cache file>: <why>", then uploads
 * what it holds, which is less than the job wrote): by their path in the mount, with the reason.
 */
function failedWrites(file: string, from: number): Map<string, string> {
  const failed = new Map<string, string>();
  let text = '';
  try {
    const fd = fs.openSync(file, 'r');
    const size = fs.fstatSync(fd).size;
    const start = Math.max(from, size - 4 * 1024 * 1024);
    const buf = Buffer.alloc(Math.max(0, size - start));
    fs.readSync(fd, buf, 0, buf.length, start);
    fs.closeSync(fd);
    text = buf.toString('utf8');
  } catch {
    return failed;
  }
  for (const line of text.split('\n')) {
    const m = /ERROR : IO error: write (.+?\/cache\/vfs\/[^/]+\/.+?): (.*)$/.exec(line);
    if (!m) continue;
    // The cache path is <cache>/vfs/<remote name>/<bucket[/prefix]>/<file>; the bucket part is the mount's root.
    const inCache = m[1]!
      .slice(m[1]!.indexOf('/cache/vfs/') + '/cache/vfs/'.length)
      .split('/')
      .slice(2)
      .join('/');
    failed.set(inCache, m[2]!);
  }
  return failed;
}

/** Where the last flush stopped reading rclone's log for write errors (they are said once). */
function reportedUpTo(home: string, record: FuseRecord): { from: number; save: (to: number) => void } {
  const file = path.join(mountDir(home, record.path), 'reported-log-offset');
  let from = 0;
  try {
    from = Number(fs.readFileSync(file, 'utf8')) || 0;
  } catch {
    // Never flushed: from the start.
  }
  return { from, save: (to) => fs.writeFileSync(file, String(to), { mode: 0o600 }) };
}

export async function waitForUploads(record: FuseRecord, home: string, emit: (e: FuseEvent) => void): Promise<FlushOutcome> {
  const t0 = Date.now();
  const log = logFile(home, record.path);
  const from = logSize(log);
  let lastProgress = t0;
  let most = 0;
  let unanswered = 0;
  for (;;) {
    let stats: VfsStats;
    try {
      stats = await rc<VfsStats>(record.rcPort, record.rcPass, 'vfs/stats');
      unanswered = 0;
    } catch (e) {
      if (!recordAlive(record)) return { ok: false, error: `the mount's rclone ended while uploading; its queued writes stay on the node (run skysync flush again)` };
      if (++unanswered >= 50) return { ok: false, error: `the mount's rclone does not answer (${(e as Error).message})` };
      await new Promise((r) => setTimeout(r, POLL_MS));
      continue;
    }
    const cache = stats.diskCache ?? {};
    const pending = (cache.uploadsInProgress ?? 0) + (cache.uploadsQueued ?? 0);
    most = Math.max(most, pending);
    if (pending === 0) {
      const errored = cache.erroredFiles ?? 0;
      if (errored > 0) return { ok: false, error: `${errored} file(s) could not be uploaded${describe(failingUploads(log, from))}` };
      const reported = reportedUpTo(home, record);
      const end = logSize(log);
      const torn = failedWrites(log, reported.from);
      reported.save(end);
      if (torn.size) {
        const [name, why] = [...torn][0]!;
        return {
          ok: false,
          error: `a job's write to ${torn.size === 1 ? name : `${torn.size} files (${name}, ...)`} failed on the node (${why}); the bucket holds only what was written before it`,
        };
      }
      emit({ event: 'flushed', path: record.path, waitedMs: Date.now() - t0, uploads: most });
      return { ok: true };
    }
    const failing = failingUploads(log, from);
    if (failing.size) return { ok: false, error: `${failing.size} file(s) keep failing to upload${describe(failing)}; they stay queued on the node for the next flush` };
    if (cache.outOfSpace) return { ok: false, error: 'the cache disk is full; writes are refused until space is freed' };
    if (Date.now() - lastProgress >= PROGRESS_EVERY_MS) {
      lastProgress = Date.now();
      const core = await rc<CoreStats>(record.rcPort, record.rcPass, 'core/stats').catch(() => ({}) as CoreStats);
      const inFlight = (core.transferring ?? []).reduce((a, t) => a + Math.max(0, (t.size ?? 0) - (t.bytes ?? 0)), 0);
      emit({ event: 'flushing', path: record.path, files: pending, bytesInFlight: inFlight, bytesPerSecond: Math.round(core.speed ?? 0) });
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function describe(failing: Map<string, string>): string {
  if (!failing.size) return '';
  const [name, why] = [...failing][0]!;
  return ` (${name}: ${why}${failing.size > 1 ? `; and ${failing.size - 1} more` : ''})`;
}
