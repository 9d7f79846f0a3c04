// The head's reading of one worker's chunk requests: refs arrive in batches while the chunks already asked for are
// being sent, and are handed out in the order they came.

import { CHUNK_REF_SIZE } from '@skysync/chunking';
import { type Connection, Frame, ProtocolError, frameName } from '@skysync/protocol';

/** Refs a connection may ask for in all: far more than any workdir has chunks, and a bound on its memory. */
const MAX_WANTED = 1 << 22;
/** Taken refs are dropped from the front of the queue in steps of this many. */
const DROP_TAKEN = 65536;

export class ChunkRequests {
  private wanted: Buffer[] = [];
  private taken = 0;
  private total = 0;
  private ended = false;
  private failure: Error | null = null;
  private kick: () => void = () => {};
  /** Settles once the worker has said it asks for nothing more (or failed: `next` throws that). */
  readonly reading: Promise<void>;

  constructor(conn: Connection) {
    this.reading = this.read(conn).catch((e: Error) => {
      this.failure = e;
      this.kick();
    });
  }

  private async read(conn: Connection): Promise<void> {
    while (!this.ended) {
      const f = await conn.next();
      if (!f) throw new ProtocolError('the worker went away');
      if (f.type === Frame.RelayWant) {
        if (f.payload.length % CHUNK_REF_SIZE) throw new ProtocolError('malformed relay request');
        this.total += f.payload.length / CHUNK_REF_SIZE;
        if (this.total > MAX_WANTED) throw new ProtocolError('relay request too large');
        for (let o = 0; o < f.payload.length; o += CHUNK_REF_SIZE) this.wanted.push(f.payload.subarray(o, o + CHUNK_REF_SIZE));
      } else if (f.type === Frame.PlanEnd) this.ended = true;
      else throw new ProtocolError(`unexpected ${frameName(f.type)} on a relay connection`);
      this.kick();
    }
  }

  /**
   * The next ref asked for, or null once every one was taken and the worker asks for nothing more. When none is
   * waiting, `beforeWait` runs first (to send what is ready).
   */
  async next(beforeWait: () => Promise<void>): Promise<Buffer | null> {
    for (;;) {
      if (this.failure) throw this.failure;
      if (this.taken < this.wanted.length) break;
      if (this.ended) return null;
      await beforeWait();
      const woken = new Promise<void>((r) => (this.kick = r));
      if (this.taken >= this.wanted.length && !this.ended && !this.failure) await woken;
    }
    const ref = this.wanted[this.taken++]!;
    // Requests are consumed in order: drop the ones sent so the array does not hold every ref to the end.
    if (this.taken === DROP_TAKEN) {
      this.wanted.splice(0, this.taken);
      this.taken = 0;
    }
    return ref;
  }
}
