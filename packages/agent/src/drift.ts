// Files the agent placed that something else changed since (a job writing into the workdir, a user editing on
// the node). Checked while the client scans, so it costs no extra round trip. This is the TypeScript path;
// with the addon, the native tree does the same in parallel.

import fs from 'node:fs';
import type { PlacedRecord } from '@skysync/apply';

export async function findDrift(root: string, entries: Map<string, PlacedRecord>): Promise<string[]> {
  const rootBuf = Buffer.from(root, 'utf8');
  const drift: string[] = [];
  // Synchronous lstat: for tens of thousands of tiny calls it beats the thread pool by a wide margin.
  for (const [p, rec] of entries) {
    if (rec.kind === 'dir') continue;
    const st = fs.lstatSync(Buffer.concat([rootBuf, Buffer.from('/' + p, 'latin1')]), { bigint: true, throwIfNoEntry: false });
    const kindOk = st && (rec.kind === 'file' ? st.isFile() : st.isSymbolicLink());
    if (!st || !kindOk || Number(st.size) !== rec.stat.size || st.mtimeNs.toString() !== rec.stat.mtimeNs || st.ino.toString() !== rec.stat.ino) {
      drift.push(p);
    }
  }
  return drift.sort();
}
