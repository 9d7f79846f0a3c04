// One push at a time per destination: a lock file holding the owner's pid (alone: agents of other versions read
// it too). A lock whose owner is gone (exited, killed and not yet reaped, or its pid now a process that started
// after the lock was written) is taken over, so a killed push never blocks the next one; the taker learns that it
// took one over, and sweeps what the dead owner left (push.ts).

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { processRunning, processStart } from '@skysync/apply';

export interface Lock {
  release(): Promise<void>;
  /** The lock was taken over from an owner that died holding it (mid-operation). */
  tookOver: boolean;
}

/** How long a live holder keeps the lock before the waiter is told (`onWait`): a short wait goes unsaid. */
export const WAIT_NOTICE_MS = 1000;

/**
 * Takes the lock, waiting up to `timeoutMs` for a live holder. `onWait` is called once, with the holder's pid,
 * when a live holder has kept the waiter for {@link WAIT_NOTICE_MS}.
 */
export async function acquireLock(file: string, what: string, timeoutMs = 60_000, onWait?: (ownerPid: number) => void): Promise<Lock> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const started = Date.now();
  const deadline = started + timeoutMs;
  let tookOver = false;
  let told = false;
  for (;;) {
    try {
      const fh = await fsp.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
      await fh.writeFile(String(process.pid));
      await fh.close();
      return {
        tookOver,
        release: async () => {
          await fsp.unlink(file).catch(() => {});
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const owner = Number((await fsp.readFile(file, 'utf8').catch(() => '')).trim());
    const written = await fsp
      .stat(file)
      .then((st) => st.mtimeMs)
      .catch(() => 0);
    // An empty lock file that is young is one being written right now, not a stale one.
    const young = Date.now() - written < 2000;
    if ((!owner && !young) || (owner && !ownerRunning(owner, written))) {
      // Stale: its owner died. Remove it only if it is still the same file.
      await fsp.unlink(file).catch(() => {});
      tookOver = true;
      continue;
    }
    if (!told && owner && onWait && Date.now() - started >= WAIT_NOTICE_MS) {
      told = true;
      onWait(owner);
    }
    if (Date.now() > deadline) throw new Error(`another skysync (pid ${owner}) is syncing ${what}; wait for it or stop it`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Boot time in ms since the epoch (/proc/stat `btime`), or null without /proc. */
const bootMs: number | null = (() => {
  try {
    const m = /^btime (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'latin1'));
    return m ? Number(m[1]) * 1000 : null;
  } catch {
    return null;
  }
})();
/** Clock ticks per second of /proc's start times: 100 on every Linux that skysync runs on. */
const TICKS_PER_SECOND = 100;

/** Whether the process that wrote a lock at `writtenMs` still runs: the pid is alive and did not start later. */
function ownerRunning(pid: number, writtenMs: number): boolean {
  if (!processRunning(pid, 0)) return false;
  const start = processStart(pid);
  if (!start || bootMs === null || !writtenMs) return true;
  // A second of slack for the clocks' granularity.
  return bootMs + (start * 1000) / TICKS_PER_SECOND <= writtenMs + 1000;
}
