// Which placed paths of a destination belong to the source of its latest push. A client describes only its own
// source (its state is kept per target, destination and source), while the agent's tree store holds whatever
// every source placed there. `--delete` makes the destination equal the pushing source, so the store keeps the
// paths that source lacks ("foreign": placed by another source) apart, and `--delete` removes them too.

import fs from 'node:fs';
import fsp from 'node:fs/promises';

/** What one push's plan said about its source. */
export interface PushedPaths {
  /**
   * The plan described the whole source: the client's base was not this destination's generation (another
   * source pushed since, or either side lost its state), so every path the source has is in it.
   */
  whole: boolean;
  /** Paths the plan placed or kept: the source has them. */
  claimed: Set<string>;
  /** Paths the plan deleted: the source no longer has them. */
  deleted: string[];
}

/** The placed paths of a tree store, as the foreign paths are worked out from them. */
export interface PlacedPaths {
  readonly size: number;
  has(path: string): boolean;
  paths(): Iterable<string>;
}

/**
 * The foreign paths once a push is recorded in the store. A whole push leaves foreign all the store holds beyond
 * the source; a push of changes only adds what it deleted and could not remove, and takes back what it placed.
 * `surelyHeld` answers, without asking the store, for paths the push just recorded.
 */
export function foreignAfter(before: Set<string>, pushed: PushedPaths, store: PlacedPaths, surelyHeld: (path: string) => boolean): Set<string> {
  const foreign = new Set<string>();
  if (pushed.whole) {
    let claimedHere = 0;
    for (const p of pushed.claimed) if (surelyHeld(p) || store.has(p)) claimedHere++;
    // The usual case, one source per destination: nothing beyond it, and no walk over the whole store.
    if (claimedHere === store.size) return foreign;
    for (const p of store.paths()) if (!pushed.claimed.has(p)) foreign.add(p);
    return foreign;
  }
  for (const list of [before, pushed.deleted]) {
    for (const p of list) if (!pushed.claimed.has(p) && store.has(p)) foreign.add(p);
  }
  return foreign;
}

/** The foreign paths of one destination, kept in a file beside its tree store. */
export class ForeignPaths {
  /** Changed since loaded: to be written before the store's next generation. */
  private changed = false;

  private constructor(
    readonly file: string,
    private paths: Set<string>,
    private onDisk: boolean,
  ) {}

  /** False when the file was missing or damaged: the store's generation must then count as unknown. */
  get known(): boolean {
    return this.onDisk;
  }

  static load(file: string): ForeignPaths {
    try {
      const paths = (JSON.parse(fs.readFileSync(file, 'latin1')) as { paths?: unknown }).paths;
      if (Array.isArray(paths) && paths.every((p) => typeof p === 'string')) return new ForeignPaths(file, new Set(paths), true);
    } catch {
      // Missing or damaged: as below.
    }
    return new ForeignPaths(file, new Set(), false);
  }

  has(path: string): boolean {
    return this.paths.has(path);
  }

  /** Paths the store no longer holds. */
  forget(paths: Iterable<string>): void {
    if (!this.paths.size) return;
    for (const p of paths) if (this.paths.delete(p)) this.changed = true;
  }

  settle(pushed: PushedPaths, store: PlacedPaths, surelyHeld: (path: string) => boolean): void {
    const next = foreignAfter(this.paths, pushed, store, surelyHeld);
    if (next.size || this.paths.size) this.changed = true;
    this.paths = next;
  }

  /** What to write, or null when the file already says it. Paths are latin1 strings: so is the file. */
  toSave(): Buffer | null {
    if (this.onDisk && !this.changed) return null;
    return Buffer.from(JSON.stringify({ paths: [...this.paths] }), 'latin1');
  }

  /** Removes the file: until the next save, a crash leaves these paths unknown rather than wrong. */
  async invalidate(): Promise<void> {
    await fsp.rm(this.file, { force: true });
    this.onDisk = false;
  }

  saved(): void {
    this.onDisk = true;
    this.changed = false;
  }
}
