// The decoded chunk-data stream on the receiving side: blocks go in as frames arrive, the builder takes exact
// byte counts in plan order.

/** Decoded data a receiver lets its frame reader run ahead of the builder by, then waits (backpressure). */
export const STREAM_HIGH_WATER = 64 * 1024 * 1024;

export class DataStream {
  private blocks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private failure: Error | null = null;
  /** Set when a take asked for more than the sender sent: the plan and the data disagree, the sync is broken. */
  shortBy: Error | null = null;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private drainWaiters: Array<() => void> = [];
  consumed = 0;

  get size(): number {
    return this.buffered;
  }

  push(block: Buffer): void {
    if (block.length === 0) return;
    this.blocks.push(block);
    this.buffered += block.length;
    this.serve();
  }

  end(): void {
    this.ended = true;
    this.serve();
  }

  fail(e: Error): void {
    this.failure = e;
    this.serve();
  }

  /** Resolves once fewer than `limit` bytes wait (backpressure for the frame reader). */
  waitBelow(limit: number): Promise<void> {
    if (this.buffered < limit || this.failure) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** The next `n` bytes when they are here already (and nobody waits), else null: no promise per small file. */
  takeReady(n: number): Buffer | null {
    if (this.waiter || this.failure || this.buffered < n) return null;
    const out = this.takeNow(n);
    if (this.drainWaiters.length) for (const d of this.drainWaiters.splice(0)) d();
    return out;
  }

  take(n: number): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new Error('DataStream.take: concurrent takes'));
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.serve();
    });
  }

  private serve(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.failure) {
      this.waiter = null;
      w.reject(this.failure);
      return;
    }
    if (this.buffered >= w.n) {
      this.waiter = null;
      w.resolve(this.takeNow(w.n));
      if (this.drainWaiters.length) for (const d of this.drainWaiters.splice(0)) d();
    } else if (this.ended) {
      this.waiter = null;
      this.shortBy ??= new Error(`chunk data ended early: needed ${w.n} more bytes, ${this.buffered} left`);
      w.reject(this.shortBy);
    }
  }

  private takeNow(n: number): Buffer {
    this.buffered -= n;
    this.consumed += n;
    const first = this.blocks[0]!;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.blocks.shift();
      else this.blocks[0] = first.subarray(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const b = this.blocks[0]!;
      const k = Math.min(b.length, n - filled);
      b.copy(out, filled, 0, k);
      filled += k;
      if (k === b.length) this.blocks.shift();
      else this.blocks[0] = b.subarray(k);
    }
    return out;
  }
}
