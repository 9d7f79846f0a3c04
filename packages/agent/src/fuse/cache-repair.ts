// rclone writes a cached file's bytes as the job writes them, and its metadata (which says the file still has to go
// up) in a separate small file, truncated then rewritten. A kill between the two leaves a complete file with an
// empty or missing metadata file, which rclone's next start takes for damage and drops: a closed file, lost. Before
// a mount is restarted on the cache of one that died, such files are marked as still to upload, as rclone itself
// marks any file written through it (a file the job was still writing goes up as far as it was written, as rclone
// does with every file it holds as written).

import fs from 'node:fs';
import path from 'node:path';

interface CacheMeta {
  ModTime: string;
  ATime: string;
  Size: number;
  Rs: Array<{ Pos: number; Size: number }>;
  Fingerprint: string;
  Dirty: boolean;
}

function readable(file: string): boolean {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.length > 0 && typeof JSON.parse(text) === 'object';
  } catch {
    return false;
  }
}

/** Marks every cached file whose metadata is missing or unreadable as still to upload; returns how many. */
export function repairCacheMetadata(cache: string): number {
  const dataRoot = path.join(cache, 'vfs');
  const metaRoot = path.join(cache, 'vfsMeta');
  let repaired = 0;
  const visit = (rel: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(path.join(dataRoot, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) {
        visit(r);
        continue;
      }
      if (!e.isFile()) continue;
      const meta = path.join(metaRoot, r);
      if (readable(meta)) continue;
      const st = fs.statSync(path.join(dataRoot, r));
      const at = st.mtime.toISOString();
      const info: CacheMeta = { ModTime: at, ATime: at, Size: st.size, Rs: st.size ? [{ Pos: 0, Size: st.size }] : [], Fingerprint: '', Dirty: true };
      fs.mkdirSync(path.dirname(meta), { recursive: true });
      const tmp = `${meta}.skysync-repair`;
      fs.writeFileSync(tmp, JSON.stringify(info));
      fs.renameSync(tmp, meta);
      repaired++;
    }
  };
  visit('');
  return repaired;
}
