// Files the agent placed that something else changed since (a job writing into the workdir, a user editing on
// the node). Checked while the client scans, so it costs no extra round trip.

import fsp from 'node:fs/promises';
import type { PlacedRecord } from '@skysync/apply';

export async function findDrift(root: string, entries: Map<string, PlacedRecord>, concurrency = 64): Promise<string[]> {
  const rootBuf = Buffer.from(root, 'utf8');
  const paths = [...entries.keys()];
  const drift: string[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < paths.length) {
      const p = paths[next++]!;
      const rec = entries.get(p)!;
      if (rec.kind === 'dir') continue;
      try {
        const st = await fsp.lstat(Buffer.concat([rootBuf, Buffer.from('/' + p, 'latin1')]), { bigint: true });
        const kindOk = rec.kind === 'file' ? st.isFile() : st.isSymbolicLink();
        if (!kindOk || Number(st.size) !== rec.stat.size || st.mtimeNs.toString() !== rec.stat.mtimeNs || st.ino.toString() !== rec.stat.ino) {
          drift.push(p);
        }
      } catch {
        drift.push(p);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, paths.length) }, worker));
  return drift.sort();
}
