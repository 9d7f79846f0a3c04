// Which object keys a bucket fetch may turn into files: each hostile key refused on its own, with its reason.
import { describe, expect, it } from 'vitest';
import { ListingSorter, compareKeys, keyProblem, sortListing } from '../src/bucket/keys.js';

const object = (path: string) => ({ path, size: 1, version: 'v' });

describe('bucket keys', () => {
  it('refuses keys that cannot name a file below the destination', () => {
    for (const bad of ['../x', 'a/../../x', '/etc/passwd', 'a//b', './a', 'a/.', 'nul\0byte', `${'n'.repeat(256)}`, `${'d/'.repeat(2100)}x`]) {
      expect(keyProblem(bad), JSON.stringify(bad.slice(0, 20))).not.toBeNull();
    }
    for (const good of ['a', 'a/b.txt', '..hidden', 'x..y/z', 'ünïcode/名前', `${'n'.repeat(255)}`]) expect(keyProblem(good)).toBeNull();
  });

  it('places the rest, refuses an object that is also a prefix, skips folder markers', () => {
    const { placeable, refused } = sortListing(['a', 'a/b', 'a/c/d', 'c/', '', 'ok', '../up', 'ok'].map(object));
    expect([...placeable.keys()].sort()).toEqual(['a/b', 'a/c/d', 'ok']);
    expect(refused.map((r) => r.path).sort()).toEqual(['../up', 'a', 'ok']);
    for (const r of refused) expect(r.error).toMatch(/^refused: /);
  });

  it('compares keys in the stores order (UTF-8 bytes), not UTF-16 units', () => {
    const keys = ['a', 'a/b', 'a0', '\u{e000}', '\u{ffff}', '\u{10000}', '\u{1f600}', 'é', 'z'];
    const byBytes = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect([...keys].sort(compareKeys)).toEqual(byBytes);
  });

  it('settles a listing batch by batch: an object waits until no key below it can come', () => {
    const sorter = new ListingSorter();
    const paths = (m: Map<string, unknown>) => [...m.keys()];
    for (const p of ['a', 'a.txt']) sorter.add(object(p));
    // `a/...` would sort after `a.txt`: `a` is not settled yet; `a.txt` neither (`a.txt/x` could follow).
    let s = sorter.settle(false);
    expect(paths(s.placeable)).toEqual([]);
    for (const p of ['a/x', 'b']) sorter.add(object(p));
    s = sorter.settle(false);
    expect(paths(s.placeable).sort()).toEqual(['a.txt', 'a/x']);
    expect(s.refused.map((r) => r.path)).toEqual(['a']);
    s = sorter.settle(true);
    expect(paths(s.placeable)).toEqual(['b']);
    expect([...sorter.listed].sort()).toEqual(['a', 'a.txt', 'a/x', 'b']);
  });

  it('settles nothing before the end of a listing out of key order', () => {
    const sorter = new ListingSorter();
    for (const p of ['b', 'c', 'a', 'z']) sorter.add(object(p));
    expect(sorter.settle(false).placeable.size).toBe(0);
    sorter.add(object('a/late'));
    const s = sorter.settle(true);
    expect([...s.placeable.keys()].sort()).toEqual(['a/late', 'b', 'c', 'z']);
    expect(s.refused.map((r) => r.path)).toEqual(['a']);
  });
});
