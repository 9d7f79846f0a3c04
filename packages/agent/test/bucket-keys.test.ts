// Which object keys a bucket fetch may turn into files: each hostile key refused on its own, with its reason.
import { describe, expect, it } from 'vitest';
import { keyProblem, sortListing } from '../src/bucket/keys.js';

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
});
