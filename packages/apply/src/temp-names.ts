// Names of what a sync creates before the transition (temp files, the staging directory), and the sweep that
// removes those an earlier, dead process left (a kill -9 mid-push leaves them: nothing else ever would).
//
// Every such name carries its owner: `.skysync-<pid>-<start>-<n>.tmp` and `.skysync-staging-<pid>-<start>-<n>`,
// where <start> is the process's start time in clock ticks since boot (/proc/<pid>/stat, field 22), so a pid
// reused by another process does not pass for the owner. The sweep removes a name only when it matches one of
// these patterns exactly and its owner is not running: a file a user or a job made, or one a live sync (another
// destination that overlaps this one, a pull) is still writing, stays.

import fs from 'node:fs';
import type { RootGuard } from './root-guard.js';

const TEMP = /^\.skysync-(\d+)-(\d+)-[0-9a-z]+\.tmp$/;
const STAGING = /^\.skysync-staging-(\d+)-(\d+)-[0-9a-z]+$/;

/** What /proc/<pid>/stat says of a process: its state letter and its start time in clock ticks since boot; null
 * where /proc does not say (no such process, or no /proc). */
function procStat(pid: number): { state: string; start: number } | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0] ?? '', start: Number(fields[19]) || 0 };
  } catch {
    return null;
  }
}

/** A process's start time in clock ticks since boot, or 0 where /proc does not say. */
export function processStart(pid: number): number {
  return procStat(pid)?.start ?? 0;
}

/**
 * Whether the process `pid` that started at `start` (0: unknown) still runs. A zombie (killed, not yet reaped by
 * its parent) does not; nor does another process that got the same pid later.
 */
export function processRunning(pid: number, start: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const st = procStat(pid);
  if (!st) return true;
  if (st.state === 'Z' || st.state === 'X') return false;
  return start === 0 || st.start === start;
}

/** This process, as its temp names name it. */
const OWNER = `${process.pid}-${processStart(process.pid)}`;
/** One counter per process: several syncs of one agent never pick the same name. */
let count = 0;

export function tempName(dir: string): string {
  const name = `.skysync-${OWNER}-${(count++).toString(36)}.tmp`;
  return dir ? `${dir}/${name}` : name;
}

export function stagingName(): string {
  return `.skysync-staging-${OWNER}-${(count++).toString(36)}`;
}

/** The kind of leftover `name` is when its owner is dead, else null (not ours, or still in use). */
export function deadLeftover(name: string): 'temp' | 'staging' | null {
  const m = TEMP.exec(name) ?? STAGING.exec(name);
  if (!m) return null;
  const pid = Number(m[1]);
  if (pid === process.pid || processRunning(pid, Number(m[2]))) return null;
  return name.startsWith('.skysync-staging-') ? 'staging' : 'temp';
}

/**
 * Removes, in the guard's root (and anywhere under it when `recursive`), the temp files and staging directories of skysync processes that are
 * no longer running. Never follows a symlink; a directory it cannot read is skipped. Returns how many went.
 */
export function sweepDeadLeftovers(guard: RootGuard, opts: { recursive: boolean; onError?: (rel: string, e: Error) => void }): number {
  let removed = 0;
  const pending = [''];
  while (pending.length) {
    const dir = pending.pop()!;
    let names: Array<{ name: string; dir: boolean }>;
    try {
      names = guard.list(dir);
    } catch {
      continue;
    }
    for (const d of names) {
      const rel = dir ? `${dir}/${d.name}` : d.name;
      const kind = deadLeftover(d.name);
      try {
        if (kind === 'temp' && !d.dir) {
          guard.unlink(rel);
          removed++;
        } else if (kind === 'staging' && d.dir) {
          // A staging directory holds temp files only, all of its (dead) owner.
          for (const t of guard.list(rel)) if (!t.dir) guard.unlink(`${rel}/${t.name}`);
          guard.rmdir(rel);
          removed++;
        } else if (d.dir && opts.recursive) pending.push(rel);
      } catch (e) {
        opts.onError?.(rel, e as Error);
      }
    }
  }
  return removed;
}
