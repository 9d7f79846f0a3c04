// Which object keys can become files under a destination. A key is the bucket's to choose and may be anything a
// store accepts: `..`, a leading `/`, NUL, names longer than a filesystem allows, or a key that is both an object
// and the prefix of others (`a` beside `a/b`). Each such key is refused on its own, with the reason; the others
// are still placed. Nothing here touches the filesystem: the root guard refuses symlinks on the way when writing.

import type { BucketObject, FileFailure } from '@skysync/protocol';

/** Longest name a Linux filesystem takes (bytes), and longest path the agent writes below a destination. */
const NAME_MAX = 255;
const PATH_MAX = 4096;

/** Why `p` cannot name a file below the destination, or null when it can. */
export function keyProblem(p: string): string | null {
  if (p.includes('\0')) return 'the key holds a NUL byte';
  if (p.startsWith('/')) return 'the key is an absolute path';
  if (Buffer.byteLength(p, 'utf8') > PATH_MAX) return `the key is longer than ${PATH_MAX} bytes`;
  for (const part of p.split('/')) {
    if (part === '' || part === '.' || part === '..') return `the key has an empty, "." or ".." component`;
    if (Buffer.byteLength(part, 'utf8') > NAME_MAX) return `a component of the key is longer than ${NAME_MAX} bytes`;
  }
  return null;
}

export interface SortedListing {
  /** Objects that become files, by path. */
  placeable: Map<string, BucketObject>;
  refused: FileFailure[];
}

/**
 * Compares paths as the stores order keys: by UTF-8 bytes, which is code point order. JavaScript compares UTF-16
 * code units, which puts characters above U+FFFF (surrogate pairs) below U+E000..U+FFFF: moved above here.
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

function codePointRank(unit: number): number {
  return unit >= 0xe000 ? unit - 0x800 : unit >= 0xd800 ? unit + 0x2000 : unit;
}

/**
 * Sorts a listing as it arrives, batch by batch, into objects that can be placed and refused keys. Keys ending in
 * `/` are the "folder" markers consoles and tools create: they hold no file and are left out without a word. A
 * key that is also the prefix of others (`a` beside `a/b`) is refused, `a/b` placed; so an object is settled only
 * once no later key can be below it: in the stores' key order, every key below `a/` sorts before `a0`, so `a` is
 * settled once the listing has passed `a0`. A listing out of that order (a server that does not sort) settles
 * nothing before its end.
 */
export class ListingSorter {
  private readonly seen = new Set<string>();
  private readonly dirs = new Set<string>();
  /** Placeable objects a later key may still turn into a directory. */
  private readonly pending = new Map<string, BucketObject>();
  private refused: FileFailure[] = [];
  private last: string | null = null;
  private ordered = true;

  /** Every path seen (placed, refused or skipped): what the bucket still has, for deletions. */
  get listed(): ReadonlySet<string> {
    return this.seen;
  }

  add(o: BucketObject): void {
    if (this.last !== null && compareKeys(o.path, this.last) < 0) this.ordered = false;
    if (this.ordered) this.last = o.path;
    if (o.path === '' || o.path.endsWith('/')) return;
    const problem = keyProblem(o.path);
    if (problem) {
      this.refused.push({ path: o.path, error: `refused: ${problem}` });
      this.seen.add(o.path);
      return;
    }
    if (this.seen.has(o.path)) {
      this.refused.push({ path: o.path, error: 'refused: listed twice' });
      return;
    }
    this.seen.add(o.path);
    for (let i = o.path.indexOf('/'); i >= 0; i = o.path.indexOf('/', i + 1)) this.dirs.add(o.path.slice(0, i));
    this.pending.set(o.path, o);
  }

  /** What is known now: objects to place and keys refused since the last call. `end`: the listing is complete. */
  settle(end: boolean): SortedListing {
    const placeable = new Map<string, BucketObject>();
    const passed = (p: string): boolean => end || (this.ordered && this.last !== null && compareKeys(this.last, `${p}0`) >= 0);
    for (const [p, o] of this.pending) {
      if (this.dirs.has(p)) {
        this.refused.push({ path: p, error: 'refused: the key is both an object and a prefix of other objects' });
        this.pending.delete(p);
      } else if (passed(p)) {
        placeable.set(p, o);
        this.pending.delete(p);
      }
    }
    const refused = this.refused;
    this.refused = [];
    return { placeable, refused };
  }
}

/** The whole listing at once (ListingSorter in one batch). */
export function sortListing(objects: BucketObject[]): SortedListing {
  const sorter = new ListingSorter();
  for (const o of objects) sorter.add(o);
  return sorter.settle(true);
}
