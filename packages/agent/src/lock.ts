// One push at a time per destination: a lock file holding the owner's pid. A lock whose owner is gone is taken
// over, so a killed push never blocks the next one.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function acquireLock(file: string, what: string, timeoutMs = 60_000): Promise<() => Promise<void>> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const fh = await fsp.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
      await fh.writeFile(String(process.pid));
      await fh.close();
      return async () => {
        await fsp.unlink(file).catch(() => {});
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const owner = Number((await fsp.readFile(file, 'utf8').catch(() => '')).trim());
    const young = await fsp
      .stat(file)
      .then((st) => Date.now() - st.mtimeMs < 2000)
      .catch(() => false);
    // An empty lock file that is young is one being written right now, not a stale one.
    if ((!owner && !young) || (owner && !alive(owner))) {
      // Stale: its owner died. Remove it only if it is still the same file.
      await fsp.unlink(file).catch(() => {});
      continue;
    }
    if (Date.now() > deadline) throw new Error(`another skysync (pid ${owner}) is syncing ${what}; wait for it or stop it`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
