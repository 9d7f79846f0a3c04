// One push at a time per destination: a lock file holding the owner's pid and start time. A lock whose owner is
// gone (exited, killed and not yet reaped, or its pid now someone else's) is taken over, so a killed push never
// blocks the next one; the taker learns that it took one over, and sweeps what the dead owner left (push.ts).

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { OWNER_PID, OWNER_START, processRunning } from '@skysync/apply';

export interface Lock {
  release(): Promise<void>;
  /** The lock was taken over from an owner that died holding it (mid-operation). */
  tookOver: boolean;
}

export async function acquireLock(file: string, what: string, timeoutMs = 60_000): Promise<Lock> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const deadline = Date.now() + timeoutMs;
  let tookOver = false;
  for (;;) {
    try {
      const fh = await fsp.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
      await fh.writeFile(`${OWNER_PID} ${OWNER_START}`);
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
    // An older agent wrote the pid alone.
    const [owner = 0, start = 0] = (await fsp.readFile(file, 'utf8').catch(() => '')).trim().split(/\s+/).map(Number);
    const young = await fsp
      .stat(file)
      .then((st) => Date.now() - st.mtimeMs < 2000)
      .catch(() => false);
    // An empty lock file that is young is one being written right now, not a stale one.
    if ((!owner && !young) || (owner && !processRunning(owner, start))) {
      // Stale: its owner died. Remove it only if it is still the same file.
      await fsp.unlink(file).catch(() => {});
      tookOver = true;
      continue;
    }
    if (Date.now() > deadline) throw new Error(`another skysync (pid ${owner}) is syncing ${what}; wait for it or stop it`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
