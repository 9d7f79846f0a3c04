// An independent view of a tree for checks: walk with plain fs, hash contents with SHA-256 (not the code under
// test's BLAKE3), and ask git which paths its ignore rules keep.

import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';

export interface Item {
  type: 'file' | 'symlink' | 'dir';
  mode: number;
  size: number;
  sha?: string;
  target?: string;
  mtimeMs?: number;
}

export function walk(root: string, opts: { skip?: (rel: string) => boolean } = {}): Map<string, Item> {
  const out = new Map<string, Item>();
  const visit = (rel: string): void => {
    const abs = rel ? path.join(root, rel) : root;
    for (const name of fs.readdirSync(abs)) {
      const r = rel ? `${rel}/${name}` : name;
      if (opts.skip?.(r)) continue;
      const st = fs.lstatSync(path.join(root, r));
      if (st.isSymbolicLink()) out.set(r, { type: 'symlink', mode: 0, size: 0, target: fs.readlinkSync(path.join(root, r)) });
      else if (st.isDirectory()) {
        out.set(r, { type: 'dir', mode: st.mode & 0o7777, size: 0 });
        visit(r);
      } else if (st.isFile()) {
        const sha = createHash('sha256')
          .update(fs.readFileSync(path.join(root, r)))
          .digest('hex');
        out.set(r, { type: 'file', mode: st.mode & 0o7777, size: st.size, sha, mtimeMs: Math.floor(st.mtimeMs) });
      }
    }
  };
  visit('');
  return out;
}

/**
 * Every path below `root`, split into directories and the rest (files, symlinks, special files), for random edits
 * to pick from. A directory that cannot be read is listed but not entered.
 */
export function listTree(root: string): { files: string[]; dirs: string[] } {
  const files: string[] = [];
  const dirs: string[] = [];
  const visit = (rel: string): void => {
    let names: string[];
    try {
      names = fs.readdirSync(path.join(root, rel));
    } catch {
      return;
    }
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      if (fs.lstatSync(path.join(root, r)).isDirectory()) {
        dirs.push(r);
        visit(r);
      } else files.push(r);
    }
  };
  visit('');
  return { files, dirs };
}

/** Files and symlinks git would keep under its ignore rules (.gitignore at every level), as a set of paths. */
export function gitKept(root: string, gitDir: string): Set<string> {
  if (!fs.existsSync(gitDir)) execFileSync('git', ['init', '-q', '--bare', gitDir]);
  const out = execFileSync(
    'git',
    ['-c', 'core.excludesFile=/dev/null', '-c', 'safe.directory=*', `--git-dir=${gitDir}`, `--work-tree=${root}`, 'ls-files', '--others', '--exclude-standard', '-z'],
    // git warns on stderr about ignore files it cannot read (symlink loops the random edits make): not ours.
    { maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] },
  ).toString('utf8');
  return new Set(out.split('\0').filter(Boolean));
}

/** Differences between an expected and an actual set of items, as readable lines (empty when equal). */
export function diffItems(expected: Map<string, Item>, actual: Map<string, Item>, what: { mtime: boolean }): string[] {
  const lines: string[] = [];
  for (const [p, e] of expected) {
    const a = actual.get(p);
    if (!a) {
      lines.push(`missing: ${p}`);
      continue;
    }
    if (a.type !== e.type) lines.push(`type ${p}: ${e.type} != ${a.type}`);
    else if (e.type === 'file') {
      if (a.sha !== e.sha) lines.push(`content ${p}`);
      if (a.mode !== e.mode) lines.push(`mode ${p}: ${e.mode.toString(8)} != ${a.mode.toString(8)}`);
      if (what.mtime && Math.abs((a.mtimeMs ?? 0) - (e.mtimeMs ?? 0)) > 1) lines.push(`mtime ${p}: ${e.mtimeMs} != ${a.mtimeMs}`);
    } else if (e.type === 'symlink' && a.target !== e.target) lines.push(`target ${p}: ${e.target} != ${a.target}`);
  }
  for (const p of actual.keys()) if (!expected.has(p)) lines.push(`extra: ${p}`);
  return lines;
}
