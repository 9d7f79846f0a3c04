import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RefusedPath, RootGuard } from '../src/index.js';
import { tempDir } from './helpers.js';

const guards: RootGuard[] = [];
function guardOf(root: string): RootGuard {
  const g = new RootGuard(root);
  guards.push(g);
  return g;
}
afterEach(() => {
  for (const g of guards.splice(0)) g.close();
});

describe('RootGuard', () => {
  it('makes missing directories and refuses a symlink or a file on the way', () => {
    const root = tempDir('guard');
    const outside = tempDir('outside');
    fs.symlinkSync(outside, path.join(root, 'link'));
    fs.writeFileSync(path.join(root, 'file'), 'x');
    const g = guardOf(root);
    g.ensureDir('a/b/c');
    expect(fs.statSync(path.join(root, 'a/b/c')).isDirectory()).toBe(true);
    expect(() => g.ensureDir('link/sub')).toThrow(RefusedPath);
    expect(() => g.ensureDir('link/sub')).toThrow(/is a symlink/);
    expect(() => g.ensureDir('file/sub')).toThrow(/is not a directory/);
    expect(() => g.checkParents('link/x')).toThrow(RefusedPath);
    expect(fs.readdirSync(outside)).toEqual([]);
  });

  it('operates on the directory it opened, not on what took its name since (no write through a swapped symlink)', () => {
    const root = tempDir('guard');
    const outside = tempDir('outside');
    const g = guardOf(root);
    g.ensureDir('d');
    // A job swaps the directory for a symlink to elsewhere after the guard checked it.
    fs.renameSync(path.join(root, 'd'), path.join(root, 'd.old'));
    fs.symlinkSync(outside, path.join(root, 'd'));
    const fd = g.createExclusive('d/f');
    fs.writeSync(fd, 'data');
    fs.closeSync(fd);
    g.rename('d/f', 'd/g');
    g.symlink(Buffer.from('target'), 'd/l');
    g.mkdir('d/sub', 0o755);
    g.chmodDir('d', 0o711);
    expect(fs.readdirSync(outside)).toEqual([]);
    expect(fs.readdirSync(path.join(root, 'd.old')).sort()).toEqual(['g', 'l', 'sub']);
    expect(fs.statSync(path.join(root, 'd.old')).mode & 0o777).toBe(0o711);
    // Forgotten (as after a removal), the name is looked up again: now a symlink, refused.
    g.forget('d');
    expect(() => g.createExclusive('d/h')).toThrow(RefusedPath);
    expect(fs.readdirSync(outside)).toEqual([]);
  });

  it('never follows a symlink in the last component', () => {
    const root = tempDir('guard');
    const outside = tempDir('outside');
    fs.writeFileSync(path.join(outside, 'secret'), 'keep');
    fs.chmodSync(outside, 0o755);
    fs.symlinkSync(path.join(outside, 'secret'), path.join(root, 'l'));
    fs.symlinkSync(outside, path.join(root, 'dl'));
    const g = guardOf(root);
    expect(() => g.openRead('l')).toThrow();
    expect(() => g.createExclusive('l')).toThrow();
    expect(() => g.chmodDir('dl', 0o700)).toThrow(RefusedPath);
    expect(g.lstat('l')!.isSymbolicLink()).toBe(true);
    g.unlink('l');
    expect(fs.readFileSync(path.join(outside, 'secret'), 'utf8')).toBe('keep');
    expect(fs.statSync(outside).mode & 0o777).toBe(0o755);
  });

  it('keeps a bounded number of directories open and finds evicted ones again', () => {
    const root = tempDir('guard');
    const g = guardOf(root);
    const before = fs.readdirSync('/proc/self/fd').length;
    for (let i = 0; i < 400; i++) g.ensureDir(`d${i}/e`);
    expect(fs.readdirSync('/proc/self/fd').length - before).toBeLessThan(200);
    const fd = g.createExclusive('d0/e/f');
    fs.closeSync(fd);
    expect(fs.existsSync(path.join(root, 'd0/e/f'))).toBe(true);
    g.close();
    expect(fs.readdirSync('/proc/self/fd').length).toBeLessThanOrEqual(before);
    expect(() => g.ensureDir('x')).toThrow(/over/);
  });

  it('rmdir forgets the directory and what is below', () => {
    const root = tempDir('guard');
    const g = guardOf(root);
    g.ensureDir('a/b');
    g.rmdir('a/b');
    expect(g.isOpen('a/b')).toBe(false);
    expect(g.isOpen('a')).toBe(true);
    g.ensureDir('a/b');
    expect(fs.statSync(path.join(root, 'a/b')).isDirectory()).toBe(true);
  });
});
