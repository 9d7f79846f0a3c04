// `agent.cjs fuse mount|flush|unmount|status`: the node's side of Storage MOUNT and MOUNT_CACHED. The client's
// request is one JSON document on stdin (FuseRequest); what happens is one JSON line per event on stdout
// (docs/PROTOCOL.md, "FUSE mounts"); the exit code is 0 when every mount did what was asked.

import fs from 'node:fs';
import { type FuseEvent, type FuseMountSpec, FuseRequest } from '@skysync/protocol';
import { resolveRemotePath } from '../context.js';
import { acquireLock } from '../lock.js';
import { repairCacheMetadata } from './cache-repair.js';
import { type FlushOutcome, waitForUploads } from './flush.js';
import { mountAt } from './mountinfo.js';
import { type FuseRecord, cacheDir, controlPassword, listRecords, mountDir, processStartOf, readRecord, recordAlive, removeRecord, writeRecord } from './records.js';
import { findRclone, fuseProblem, startRclone, unmountPath } from './rclone.js';

/** Credentials are renewed (a remount, after a flush) when less than this is left of them, and less than a third of
 * the time they were given for: an STS session of 12 h is renewed in its last hour, a GCS token of 1 h after 40 min. */
const RENEW_BEFORE_MS = 60 * 60 * 1000;

function renewDue(r: FuseRecord): boolean {
  if (r.expiresAtMs === null) return false;
  const left = r.expiresAtMs - Date.now();
  return left < Math.min(RENEW_BEFORE_MS, (r.expiresAtMs - r.startedAtMs) / 3);
}

export async function runFuse(verb: string, home: string, input: string): Promise<number> {
  const request = FuseRequest.decode(Buffer.from(input || '{"mounts":[],"only":[]}'));
  const emit = (e: FuseEvent): void => {
    process.stdout.write(`${JSON.stringify(e)}\n`);
  };
  const fuse = new FuseCommands(home, request.mounts, emit, request.skipUnknown ?? false);
  const ok =
    verb === 'mount'
      ? await fuse.mountAll()
      : verb === 'flush'
        ? await fuse.flush(request.only)
        : verb === 'unmount'
          ? await fuse.unmount(request.only)
          : verb === 'status'
            ? fuse.status()
            : null;
  if (ok === null) throw new Error(`unknown fuse command ${JSON.stringify(verb)} (mount, flush, unmount, status)`);
  return ok ? 0 : 1;
}

class FuseCommands {
  constructor(
    private readonly home: string,
    private readonly specs: FuseMountSpec[],
    private readonly emit: (e: FuseEvent) => void,
    private readonly skipUnknown = false,
  ) {}

  private pathOf(p: string): string {
    return resolveRemotePath(this.home, p);
  }

  private specFor(mountPath: string): FuseMountSpec | undefined {
    return this.specs.find((s) => this.pathOf(s.path) === mountPath);
  }

  async mountAll(): Promise<boolean> {
    const results = await Promise.all(this.specs.map((s) => this.locked(this.pathOf(s.path), () => this.mountOne(s))));
    return results.every(Boolean);
  }

  private async locked<T>(mountPath: string, work: () => Promise<T>): Promise<T> {
    const lock = await acquireLock(`${mountDir(this.home, mountPath)}.lock`, mountPath, 10 * 60_000);
    try {
      return await work();
    } finally {
      await lock.release();
    }
  }

  private async mountOne(spec: FuseMountSpec): Promise<boolean> {
    const mountPath = this.pathOf(spec.path);
    const fail = (error: string): false => {
      this.emit({ event: 'failed', key: spec.key, path: mountPath, error });
      return false;
    };
    const record = readRecord(this.home, mountPath);
    const current = mountAt(mountPath);
    let how: 'mounted' | 'remounted' | 'resumed' = 'mounted';
    if (current) {
      const ours = record && current.fsType.startsWith('fuse.rclone');
      if (!ours) return fail(`${mountPath} is already a mount point (${current.fsType} ${current.source}) that skysync did not make; unmount it or choose another path`);
      if (recordAlive(record)) {
        const right = record.source === spec.source && record.mode === spec.mode && !renewDue(record);
        if (right) {
          this.emit({ event: 'mounted', key: spec.key, path: mountPath, how: 'kept' });
          return true;
        }
        // Another source or mode, or credentials about to expire: what is queued goes up first, then a new mount.
        const flushed = await waitForUploads(record, this.home, (e) => this.emit(e));
        if (!flushed.ok) return fail(`${mountPath}: not remounted: ${flushed.error}`);
        const down = this.stop(record);
        if (down) return fail(down);
        how = 'remounted';
      } else {
        // rclone died under its mount: the kernel keeps a dead endpoint there until it is detached.
        unmountPath(mountPath, true);
        how = 'resumed';
      }
    } else if (record && !recordAlive(record)) {
      how = 'resumed';
    }
    let created = false;
    try {
      const st = fs.statSync(mountPath, { throwIfNoEntry: false });
      if (st && !st.isDirectory()) return fail(`${mountPath} exists and is not a directory; choose another mount path`);
      if (st) {
        const entries = fs.readdirSync(mountPath);
        if (entries.length)
          return fail(
            `${mountPath} is not empty (${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}) and not a mount; skysync never deletes what is there: move it away or choose another path`,
          );
      }
      const problem = fuseProblem();
      if (problem) return fail(`cannot mount ${spec.source} here: ${problem}; use mode: COPY instead`);
      const rclone = findRclone(this.home);
      if (!rclone) return fail('rclone is not on this node (skysync provides it before mounting; run the command again)');
      if (!st) {
        fs.mkdirSync(mountPath, { recursive: true });
        created = true;
      }
      // Writes a dead rclone had taken but not yet recorded as pending: recorded now, so they go up.
      if (how === 'resumed') repairCacheMetadata(cacheDir(this.home, mountPath));
      const rcPass = controlPassword(this.home, mountPath);
      const started = await startRclone(rclone, spec, mountPath, this.home, rcPass);
      const pid = started.child.pid ?? 0;
      writeRecord(this.home, {
        format: 1,
        key: spec.key,
        path: mountPath,
        written: spec.path,
        source: spec.source,
        mode: spec.mode,
        pid,
        pidStart: processStartOf(pid) ?? '',
        rcPort: started.rcPort,
        rcPass,
        expiresAtMs: spec.expiresAtMs,
        startedAtMs: Date.now(),
      });
      this.emit({ event: 'mounted', key: spec.key, path: mountPath, how });
      return true;
    } catch (e) {
      if (created) fs.rmSync(mountPath, { recursive: false, force: true });
      return fail(`${mountPath}: ${(e as Error).message}`);
    }
  }

  /** Unmounts a record's mount and ends its rclone; why it could not, or null. */
  private stop(record: FuseRecord): string | null {
    if (mountAt(record.path)) {
      const r = unmountPath(record.path, false);
      if (!r.ok) return `${record.path} could not be unmounted (${r.error}); a process may still use it: stop it and run the command again`;
    }
    if (recordAlive(record)) {
      try {
        process.kill(record.pid, 'SIGTERM');
      } catch {
        // Gone meanwhile.
      }
    }
    removeRecord(this.home, record.path);
    return null;
  }

  private selected(only: string[]): FuseRecord[] {
    const wanted = new Set(only.map((p) => this.pathOf(p)));
    const records = listRecords(this.home).filter((r) => wanted.size === 0 || wanted.has(r.path));
    for (const p of wanted) {
      if (!records.some((r) => r.path === p) && !this.skipUnknown)
        this.emit({ event: 'failed', key: this.specFor(p)?.key ?? p, path: p, error: `${p} is not a skysync mount on this node` });
    }
    return records;
  }

  /** Waits until everything written under the selected mounts is in the bucket (restarting a dead mount first). */
  async flush(only: string[]): Promise<boolean> {
    const records = this.selected(only);
    const outcomes = await Promise.all(records.map((r) => this.flushOne(r)));
    return outcomes.every((o) => o.ok || o.dead) && (only.length === 0 || this.skipUnknown || records.length === only.length);
  }

  private async flushOne(record: FuseRecord): Promise<FlushOutcome> {
    let live = record;
    if (!recordAlive(record) || !mountAt(record.path)) {
      // Writes queued by a mount whose rclone died are in its cache: a new rclone on the same cache uploads them.
      const spec = this.specFor(record.path);
      if (!spec) {
        // The client restarts it with fresh credentials (never kept here) and asks again.
        this.emit({ event: 'dead', key: record.key, path: record.path, written: record.written, source: record.source, mode: record.mode });
        return { ok: false, error: 'its rclone is gone', dead: true };
      }
      const ok = await this.locked(record.path, () => this.mountOne(spec));
      const again = ok ? readRecord(this.home, record.path) : null;
      if (!again) return { ok: false, error: 'restart failed' };
      live = again;
    }
    const outcome = await waitForUploads(live, this.home, (e) => this.emit(e));
    if (!outcome.ok) this.emit({ event: 'failed', key: live.key, path: live.path, error: outcome.error });
    return outcome;
  }

  async unmount(only: string[]): Promise<boolean> {
    const records = this.selected(only);
    const results = await Promise.all(
      records.map(async (r) => {
        const flushed = await this.flushOne(r);
        if (!flushed.ok) return !!flushed.dead;
        return this.locked(r.path, async () => {
          const record = readRecord(this.home, r.path) ?? r;
          const why = this.stop(record);
          if (why) {
            this.emit({ event: 'failed', key: r.key, path: r.path, error: why });
            return false;
          }
          // Everything is in the bucket: the cache is only a copy now.
          fs.rmSync(cacheDir(this.home, r.path), { recursive: true, force: true });
          this.emit({ event: 'unmounted', path: r.path });
          return true;
        });
      }),
    );
    return results.every(Boolean) && (only.length === 0 || this.skipUnknown || records.length === only.length);
  }

  status(): boolean {
    for (const r of listRecords(this.home)) {
      this.emit({ event: 'status', path: r.path, written: r.written, key: r.key, source: r.source, mode: r.mode, alive: recordAlive(r), mounted: !!mountAt(r.path) });
    }
    return true;
  }
}
