// `--delete`: after a push, remove what the destination holds beyond the source, except what the synced ignore
// rules exclude (those are the user's to keep: build outputs, data, caches).

import fsp from 'node:fs/promises';
import type { NativeAddon } from '@skysync/chunking';
import type { FileFailure } from '@skysync/protocol';

export async function mirrorExtras(
  root: string,
  placed: { has(path: string): boolean },
  native: NativeAddon,
  failed: FileFailure[],
): Promise<number> {
  const scan = await native.scan(root, null);
  const extras = scan.changes
    .map((c) => c.entry)
    .filter((e) => !placed.has(e.path) && !e.path.split('/')[0]!.startsWith('.skysync-'))
    .sort((a, b) => (a.path < b.path ? 1 : -1));
  const rootBuf = Buffer.from(root, 'utf8');
  let removed = 0;
  for (const e of extras) {
    const abs = Buffer.concat([rootBuf, Buffer.from('/' + e.path, 'latin1')]);
    try {
      if (e.kind === 'dir') await fsp.rmdir(abs);
      else await fsp.unlink(abs);
      removed++;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A directory that still holds ignored files stays.
      if (code !== 'ENOTEMPTY' && code !== 'ENOENT') failed.push({ path: e.path, error: (err as Error).message });
    }
  }
  return removed;
}
