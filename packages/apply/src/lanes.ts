// The receiving side of lanes: data blocks that took turns over the main connection and extra channels are put
// back in turn order before they reach the builder (docs/PROTOCOL.md, "Lanes"). Each lane has its own
// compression stream, so each is decoded by its own decoder as it arrives.

import { type BlockDecoder, type Connection, Frame, ProtocolError, frameName } from '@skysync/protocol';
import type { DataStream } from './data-stream.js';

/** Blocks a lane may hold while it waits for its turn; past this it stops reading (its channel window closes). */
const MAX_QUEUED = 8;

interface LaneIn {
  queue: Buffer[];
  /** Resolves once the lane's data-end came; rejects on anything else. */
  reading: Promise<void> | null;
  conn: Connection | null;
}

export class LaneMerger {
  /** Lane ids in turn order (0: the main connection), once the sender switched. */
  private order: number[] | null = null;
  private turn = 0;
  private readonly lanes = new Map<number, LaneIn>([[0, { queue: [], reading: null, conn: null }]]);
  private waiters: Array<() => void> = [];
  private failure: Error | null = null;
  private ended = false;

  constructor(
    private readonly stream: DataStream,
    private readonly newDecoder: () => BlockDecoder,
    private readonly highWater: number,
  ) {}

  get active(): boolean {
    return this.order !== null;
  }

  get laneCount(): number {
    return this.order?.length ?? 1;
  }

  /** A lane the server admitted for this operation: it is read from now on, its blocks held until their turn. */
  attach(id: number, conn: Connection): void {
    if (this.lanes.has(id)) throw new ProtocolError(`lane ${id} opened twice`);
    const lane: LaneIn = { queue: [], reading: null, conn };
    this.lanes.set(id, lane);
    lane.reading = this.read(id, lane, conn);
    lane.reading.catch((e: Error) => this.fail(e));
  }

  /** The `lanes` frame: blocks from here on take turns over the main connection and `ids`. */
  switchTo(ids: number[]): void {
    if (this.order) throw new ProtocolError('lanes switched twice');
    if (!Array.isArray(ids) || ids.length === 0 || ids.length > 64) throw new ProtocolError('malformed lanes frame');
    for (const id of ids) {
      if (!Number.isInteger(id) || id === 0 || !this.lanes.has(id)) throw new ProtocolError(`lanes frame names lane ${String(id)}, which is not open`);
    }
    if (new Set(ids).size !== ids.length) throw new ProtocolError('lanes frame names a lane twice');
    this.order = [0, ...ids];
    this.drain();
  }

  /** A decoded block from the main connection. */
  async main(block: Buffer): Promise<void> {
    if (!this.order) {
      this.stream.push(block);
      await this.stream.waitBelow(this.highWater);
      return;
    }
    await this.enqueue(this.lanes.get(0)!, block);
  }

  /** The main connection's data-end: every lane in use must have ended too, with nothing left out of turn. */
  async end(): Promise<void> {
    if (this.order) {
      await Promise.all(this.order.slice(1).map((id) => this.lanes.get(id)!.reading));
      this.drain();
      if (this.failure) throw this.failure;
      for (const id of this.order) {
        if (this.lanes.get(id)!.queue.length) throw new ProtocolError(`lane ${id} sent data out of turn`);
      }
    }
    this.ended = true;
    this.stream.end();
  }

  /** Ends the lanes (the operation is over, or failed). */
  close(): void {
    if (!this.ended) this.fail(new ProtocolError('the operation ended before its data did'));
    this.ended = true;
    for (const [id, lane] of this.lanes) if (id !== 0) lane.conn?.end();
  }

  private async read(id: number, lane: LaneIn, conn: Connection): Promise<void> {
    const decoder = this.newDecoder();
    for (;;) {
      const f = await conn.next();
      if (!f) throw new ProtocolError(`lane ${id} closed before its data ended`);
      if (f.type === Frame.DataEnd) return;
      if (f.type !== Frame.Data) throw new ProtocolError(`unexpected ${frameName(f.type)} on lane ${id}`);
      await this.enqueue(lane, decoder.decode(f.payload));
    }
  }

  private async enqueue(lane: LaneIn, block: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    lane.queue.push(block);
    this.drain();
    while (!this.failure && (lane.queue.length > MAX_QUEUED || this.stream.size >= this.highWater)) {
      if (lane.queue.length <= MAX_QUEUED) await this.stream.waitBelow(this.highWater);
      else await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (this.failure) throw this.failure;
  }

  private drain(): void {
    const order = this.order;
    if (!order) return;
    let moved = false;
    for (;;) {
      const lane = this.lanes.get(order[this.turn % order.length]!)!;
      const block = lane.queue.shift();
      if (!block) break;
      this.stream.push(block);
      this.turn++;
      moved = true;
    }
    if (moved) for (const w of this.waiters.splice(0)) w();
  }

  private fail(e: Error): void {
    if (this.failure || this.ended) return;
    this.failure = e;
    this.stream.fail(e);
    for (const w of this.waiters.splice(0)) w();
  }
}
