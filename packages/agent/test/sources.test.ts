// The foreign paths of a destination: what its tree store holds that the latest push's source lacks.

import { describe, expect, it } from 'vitest';
import { underAny } from '../src/mirror.js';
import { foreignAfter, type PushedPaths } from '../src/sources.js';

const store = (paths: string[]) => ({ size: paths.length, has: (p: string) => paths.includes(p), paths: () => paths });
const pushed = (whole: boolean, claimed: string[], deleted: string[] = []): PushedPaths => ({ whole, claimed: new Set(claimed), deleted });

describe('foreignAfter', () => {
  it('a whole plan: everything held beyond the source', () => {
    expect([...foreignAfter(new Set(), pushed(true, ['a', 'x']), store(['a', 'b', 'c']), (p) => p === 'a')]).toEqual(['b', 'c']);
    expect(foreignAfter(new Set(['b']), pushed(true, ['a', 'b']), store(['a', 'b']), () => true).size).toBe(0);
  });

  it("a whole plan that placed and forgot one path does not hide another source's path", () => {
    // 'a' was placed and forgotten in the same push: not surely held, and the store no longer has it.
    const held = store(['b']);
    expect([...foreignAfter(new Set(), pushed(true, ['a']), held, () => false)]).toEqual(['b']);
  });

  it('a plan of changes: keeps what was foreign, adds deletions still held, takes back what it placed', () => {
    const f = foreignAfter(new Set(['b', 'c']), pushed(false, ['c'], ['d', 'e']), store(['a', 'b', 'c', 'd']), () => false);
    expect([...f].sort()).toEqual(['b', 'd']);
  });
});

describe('underAny (what --delete leaves because the source could not read it)', () => {
  it('the path itself and everything below it, nothing beside it', () => {
    const roots = new Set(['locked', 'a/secret.txt']);
    for (const p of ['locked', 'locked/x', 'locked/sub/y', 'a/secret.txt']) expect(underAny(p, roots), p).toBe(true);
    for (const p of ['lockedx', 'locke', 'a', 'a/secret.txt2', 'b/locked', 'a/secret']) expect(underAny(p, roots), p).toBe(false);
    expect(underAny('locked/x', new Set())).toBe(false);
  });
});
