import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RootGuard, processRunning, processStart, sweepDeadLeftovers } from '../src/index.js';
import { listAll, tempDir } from './helpers.js';

/** A pid that belonged to a process which has exited (and was reaped). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

describe('leftovers of dead skysync processes', () => {
  it('knows a running process from a dead one and from a pid reused by another', () => {
    expect(processRunning(process.pid, processStart(process.pid))).toBe(true);
    expect(processRunning(process.pid, processStart(process.pid) + 1)).toBe(false);
    expect(processRunning(deadPid(), 0)).toBe(false);
  });

  it('removes exactly the temp files and staging directories of dead owners, and nothing a user or a live sync owns', () => {
    const root = tempDir('sweep');
    const dead = deadPid();
    const live = `${process.ppid}-${processStart(process.ppid)}`;
    const files = {
      removed: [`.skysync-${dead}-123-0.tmp`, `a/b/.skysync-${dead}-123-1z.tmp`],
      kept: [
        `.skysync-${live}-3.tmp`,
        `a/.skysync-${live}-4.tmp`,
        '.skysync-0123456789ab-1.tmp',
        `.skysync-${dead}-123-1.tmp.bak`,
        `.skysync-${dead}-123-1.TMP`,
        `x.skysync-${dead}-123-1.tmp`,
        'a/notes.tmp',
        '.skysync-other',
      ],
    };
    for (const f of [...files.removed, ...files.kept]) {
      fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
      fs.writeFileSync(path.join(root, f), 'x');
    }
    fs.mkdirSync(path.join(root, `.skysync-staging-${dead}-123-2`));
    fs.writeFileSync(path.join(root, `.skysync-staging-${dead}-123-2/.skysync-${dead}-123-3.tmp`), 'x');
    fs.mkdirSync(path.join(root, `.skysync-staging-${live}-5`));
    // A directory with a temp name is a user's, and so is a file with a staging name.
    fs.mkdirSync(path.join(root, `a/.skysync-${dead}-123-9.tmp`));
    fs.writeFileSync(path.join(root, `a/.skysync-staging-${dead}-123-8`), 'x');
    const outside = tempDir('sweep-outside');
    fs.writeFileSync(path.join(outside, `.skysync-${dead}-123-0.tmp`), 'x');
    fs.symlinkSync(outside, path.join(root, 'link'));

    const guard = new RootGuard(root);
    try {
      expect(sweepDeadLeftovers(guard, { recursive: false })).toBe(2);
      expect(fs.existsSync(path.join(root, files.removed[1]!))).toBe(true);
      expect(sweepDeadLeftovers(guard, { recursive: true })).toBe(1);
    } finally {
      guard.close();
    }
    const left = listAll(root);
    for (const f of files.removed) expect(left).not.toContain(f);
    for (const f of files.kept) expect(left).toContain(f);
    expect(left).toContain(`.skysync-staging-${live}-5`);
    expect(left).toContain(`a/.skysync-${dead}-123-9.tmp`);
    expect(left).toContain(`a/.skysync-staging-${dead}-123-8`);
    expect(left.filter((p) => p.startsWith('.skysync-staging-') && p.includes(String(dead)))).toEqual([]);
    expect(fs.readdirSync(outside)).toEqual([`.skysync-${dead}-123-0.tmp`]);
  });
});
