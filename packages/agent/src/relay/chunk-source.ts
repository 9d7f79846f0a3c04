// Where the head finds the chunks a worker asks for: in the temp files its own push is writing, as they land,
// then in what its records locate once that push is over.

import type { HeldChunks, Receiver } from '@skysync/apply';

/** Where the head has a chunk's bytes. */
export interface ChunkLocation {
  /** Relative to the push's root (latin1, as paths). */
  path: string;
  offset: number;
  /** Set for chunks in the temp files this push is writing (it knows their length); others are hashed first. */
  len?: number;
}

export interface ChunkSource {
  /** Where the chunk is, when that is known without waiting (null: the head will not have it); else undefined. */
  findNow(id: Buffer): ChunkLocation | null | undefined;
  /**
   * Where the chunk is, waiting while the head's own push may still receive it; null when it will not hold it.
   * `settled`: only once the push is over (a temp file of this push was renamed away meanwhile).
   */
  find(id: Buffer, settled?: boolean): Promise<ChunkLocation | null>;
}

/**
 * What the head holds while its own push runs: chunks of this push as they land in its temp files (the receiver
 * says so), then, once the push is recorded, whatever its records locate. A request for a chunk that is not here
 * yet waits as long as the push may still bring it.
 */
export class PushChunks implements ChunkSource {
  private receiver: Receiver | null = null;
  private settled = false;
  private renaming = false;
  private waiters: Array<() => void> = [];
  /** What each temp-file promise settled to (one promise per file or batch, shared by its chunks). */
  private readonly known = new WeakMap<Promise<string | null>, string | null>();
  private readonly tracked = new WeakSet<Promise<string | null>>();

  constructor(
    private held: HeldChunks,
    private holdsNothing: boolean,
  ) {}

  /** The head's receiver, once its plan arrived; it must call `onChunk` as each chunk lands. */
  attach(r: Receiver): void {
    this.receiver = r;
  }

  onChunk(key: string): void {
    const sc = this.receiver?.received(key);
    if (!sc) return;
    if (this.known.has(sc.file)) this.wake();
    else if (!this.tracked.has(sc.file)) {
      this.tracked.add(sc.file);
      const file = sc.file;
      file.then(
        (f) => {
          this.known.set(file, f);
          this.wake();
        },
        () => {
          this.known.set(file, null);
          this.wake();
        },
      );
    }
  }

  /**
   * The head's data has all arrived: its transition will rename temp files into place, and a large one is swapped
   * with the file it replaces (the temp name then holds the old bytes for a moment). From now on every chunk is
   * hashed before it is sent, wherever it comes from.
   */
  renamingSoon(): void {
    this.renaming = true;
  }

  /** The push is over and recorded (or never brought anything): from now on only the records answer. */
  settle(held: HeldChunks, holdsNothing: boolean): void {
    this.held = held;
    this.holdsNothing = holdsNothing;
    this.receiver = null;
    this.settled = true;
    this.wake();
  }

  private wake(): void {
    if (!this.waiters.length) return;
    for (const w of this.waiters.splice(0)) w();
  }

  private changed(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }

  private locate(id: Buffer): ChunkLocation | null {
    if (this.holdsNothing) return null;
    const loc = this.held.locate([id])[0];
    return loc ? { path: loc.path, offset: loc.offset } : null;
  }

  findNow(id: Buffer): ChunkLocation | null | undefined {
    const sc = this.receiver?.received(id.toString('latin1'));
    if (sc) {
      if (!this.known.has(sc.file)) return undefined;
      const f = this.known.get(sc.file);
      if (f) return this.renaming ? { path: f, offset: sc.offset } : { path: f, offset: sc.offset, len: sc.len };
    }
    return this.locate(id) ?? (this.settled ? null : undefined);
  }

  async find(id: Buffer, settled = false): Promise<ChunkLocation | null> {
    for (;;) {
      if (settled && this.settled) return this.locate(id);
      if (!settled) {
        const now = this.findNow(id);
        if (now !== undefined) return now;
      }
      await this.changed();
    }
  }
}
