// A plain walk for pulls: everything under the path, no ignore rules (like `rsync host:path local/`), symlinks
// recorded and never followed. Names stay raw bytes (latin1 strings).

import fsp from 'node:fs/promises';

export interface WalkEntry {
  path: string;
  kind: 'file' | 'dir' | 'symlink';
  mode: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  target?: string;
}

/** The fields of a walk entry that come from one lstat. */
export function statFields(p: string, st: import('node:fs').BigIntStats): Omit<WalkEntry, 'kind' | 'target'> {
  return {
    path: p,
    mode: Number(st.mode & 0o7777n),
    size: Number(st.size),
    mtimeSec: Number(st.mtimeNs / 1_000_000_000n),
    mtimeNsec: Number(st.mtimeNs % 1_000_000_000n),
  };
}

export async function walkTree(root: string, warn: (m: string) => void): Promise<WalkEntry[]> {
  const out: WalkEntry[] = [];
  const rootBuf = Buffer.from(root, 'utf8');
  const visit = async (rel: string): Promise<void> => {
    const abs = rel ? Buffer.concat([rootBuf, Buffer.from('/' + rel, 'latin1')]) : rootBuf;
    let names: Buffer[];
    try {
      names = (await fsp.readdir(abs, { encoding: 'buffer' })) as Buffer[];
    } catch (e) {
      warn(`cannot read ${root}/${Buffer.from(rel, 'latin1').toString()}: ${(e as Error).message}`);
      return;
    }
    const subdirs: string[] = [];
    await Promise.all(
      names.map(async (n) => {
        const p = rel ? `${rel}/${n.toString('latin1')}` : n.toString('latin1');
        const full = Buffer.concat([rootBuf, Buffer.from('/' + p, 'latin1')]);
        const st = await fsp.lstat(full, { bigint: true }).catch(() => null);
        if (!st) return;
        const base = statFields(p, st);
        if (st.isSymbolicLink()) {
          const target = (await fsp.readlink(full, { encoding: 'buffer' })) as Buffer;
          out.push({ ...base, kind: 'symlink', target: target.toString('latin1') });
        } else if (st.isDirectory()) {
          out.push({ ...base, kind: 'dir', size: 0 });
          subdirs.push(p);
        } else if (st.isFile()) {
          out.push({ ...base, kind: 'file' });
        } else {
          warn(`skipped ${Buffer.from(p, 'latin1').toString()}: not a file, directory or symlink`);
        }
      }),
    );
    for (const d of subdirs) await visit(d);
  };
  await visit('');
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
