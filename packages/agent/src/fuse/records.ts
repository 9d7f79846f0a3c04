// What the agent knows of each FUSE mount it started, one record per mount path under ~/.skysync/mounts/<id>/:
// the source, the mode, the rclone process and its control port, and the cache directory that holds writes not
// yet uploaded. The control password is a local one (it opens only this user's rclone on 127.0.0.1), never a cloud
// credential: those stay in the rclone process's environment and are given again by the client to restart it.

import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export type FuseMode = 'MOUNT' | 'MOUNT_CACHED';

export interface FuseRecord {
  format: 1;
  key: string;
  /** Absolute. */
  path: string;
  /** As the task wrote it (`~/out`), for matching the client's names. */
  written: string;
  source: string;
  mode: FuseMode;
  pid: number;
  /** /proc/<pid>/stat start time: a pid reused by another process does not pass for this rclone. */
  pidStart: string;
  rcPort: number;
  rcPass: string;
  /** When the credentials rclone was started with stop working (null: the node's own identity, or none needed). */
  expiresAtMs: number | null;
  startedAtMs: number;
}

export function mountsRoot(home: string): string {
  return path.join(home, '.skysync', 'mounts');
}

export function mountDir(home: string, mountPath: string): string {
  return path.join(mountsRoot(home), createHash('sha256').update(mountPath).digest('hex').slice(0, 16));
}

export function cacheDir(home: string, mountPath: string): string {
  return path.join(mountDir(home, mountPath), 'cache');
}

export function logFile(home: string, mountPath: string): string {
  return path.join(mountDir(home, mountPath), 'rclone.log');
}

export function readRecord(home: string, mountPath: string): FuseRecord | null {
  try {
    const r = JSON.parse(fs.readFileSync(path.join(mountDir(home, mountPath), 'record.json'), 'utf8')) as FuseRecord;
    return r.format === 1 && r.path === mountPath ? { ...r, written: r.written ?? r.path } : null;
  } catch {
    return null;
  }
}

export function listRecords(home: string): FuseRecord[] {
  let ids: string[];
  try {
    ids = fs.readdirSync(mountsRoot(home));
  } catch {
    return [];
  }
  const out: FuseRecord[] = [];
  for (const id of ids) {
    try {
      const r = JSON.parse(fs.readFileSync(path.join(mountsRoot(home), id, 'record.json'), 'utf8')) as FuseRecord;
      if (r.format === 1 && typeof r.path === 'string') out.push({ ...r, written: r.written ?? r.path });
    } catch {
      // A directory without a record: a mount that never started; its cache (if any) is resumed by path.
    }
  }
  return out;
}

export function writeRecord(home: string, r: FuseRecord): void {
  const dir = mountDir(home, r.path);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = path.join(dir, `record.${randomBytes(4).toString('hex')}.tmp`);
  fs.writeFileSync(tmp, JSON.stringify(r), { mode: 0o600 });
  fs.renameSync(tmp, path.join(dir, 'record.json'));
}

export function removeRecord(home: string, mountPath: string): void {
  fs.rmSync(path.join(mountDir(home, mountPath), 'record.json'), { force: true });
}

/** The start time of a running process (null once it is gone, or a zombie nobody reaped yet). */
export function processStartOf(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields counted after the command name (which may hold spaces and parentheses): state, ..., start time (22).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return null;
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

export function recordAlive(r: FuseRecord): boolean {
  return r.pid > 0 && processStartOf(r.pid) === r.pidStart;
}

/**
 * The password of a mount's rclone control server, kept for the mount's life: rclone names its cache after its
 * settings, this one included, so a restart with another would not find the writes queued by the last one.
 */
export function controlPassword(home: string, mountPath: string): string {
  const file = path.join(mountDir(home, mountPath), 'rc-pass');
  try {
    const known = fs.readFileSync(file, 'utf8').trim();
    if (known) return known;
  } catch {
    // First mount at this path.
  }
  const pass = randomBytes(18).toString('base64url');
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, pass, { mode: 0o600 });
  return pass;
}
