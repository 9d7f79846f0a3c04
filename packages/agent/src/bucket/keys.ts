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
 * Splits a listing into the objects that can be placed and the refused keys. Keys ending in `/` are the
 * "folder" markers consoles and tools create: they hold no file and are left out without a word.
 */
export function sortListing(objects: BucketObject[]): SortedListing {
  const placeable = new Map<string, BucketObject>();
  const refused: FileFailure[] = [];
  for (const o of objects) {
    if (o.path === '' || o.path.endsWith('/')) continue;
    const problem = keyProblem(o.path);
    if (problem) refused.push({ path: o.path, error: `refused: ${problem}` });
    else if (placeable.has(o.path)) refused.push({ path: o.path, error: 'refused: listed twice' });
    else placeable.set(o.path, o);
  }
  // A file cannot also be a directory: `a` beside `a/b` is refused, `a/b` is placed.
  const dirs = new Set<string>();
  for (const p of placeable.keys()) {
    for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) dirs.add(p.slice(0, i));
  }
  for (const p of dirs) {
    if (!placeable.delete(p)) continue;
    refused.push({ path: p, error: 'refused: the key is both an object and a prefix of other objects' });
  }
  return { placeable, refused };
}
