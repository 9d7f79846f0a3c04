// Travel order: the order in which a push's entries reach the agent, which builds them in that order.

/** Files at least this large travel as a stream of their own that the agent reads ahead of its writes. */
const LARGE_FILE = 8 * 1024 * 1024;
/** What one more small file costs the agent, counted in bytes of a large file's stream. */
const SMALL_FILE_COST = 16 * 1024;

/** Byte order of two paths (latin1 strings, so this is the order of their raw bytes). */
export function comparePaths(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function byPath(a: { entry: { path: string } }, b: { entry: { path: string } }): number {
  return comparePaths(a.entry.path, b.entry.path);
}

/**
 * The order entries travel in: path order, except that small files are spread between the large ones in
 * proportion to their share of the work. The agent builds files in stream order; a run of thousands of small
 * files is paced by its per-file work while the link idles, and a large file by the link while the agent idles.
 * Interleaved, the agent writes small files while the next large one is still arriving. The last large file
 * travels last, after every small one: the agent may be behind by its whole buffer when the data ends, and a
 * large file's backlog drains in a fraction of the time that thousands of small files take.
 */
export function travelOrder<T extends { path: string; size?: number }>(items: T[]): T[] {
  const large = items.filter((x) => (x.size ?? 0) >= LARGE_FILE);
  if (large.length === 0 || large.length === items.length) return items;
  const small = items.filter((x) => (x.size ?? 0) < LARGE_FILE);
  const weight = (x: T): number => (x.size ?? 0) + SMALL_FILE_COST;
  const last = large.pop()!;
  const largeTotal = large.reduce((a, x) => a + x.size!, 0);
  const smallTotal = small.reduce((a, x) => a + weight(x), 0);
  const out: T[] = [];
  let i = 0;
  let j = 0;
  let largeDone = 0;
  let smallDone = 0;
  while (i < large.length || j < small.length) {
    if (j < small.length && (i >= large.length || smallDone * largeTotal <= largeDone * smallTotal)) {
      smallDone += weight(small[j]!);
      out.push(small[j++]!);
    } else {
      largeDone += large[i]!.size!;
      out.push(large[i++]!);
    }
  }
  out.push(last);
  return out;
}
