// The sending side's data pump: literal chunk bytes, read from local files in plan order, grouped into DATA
// frames and compressed as one stream (level.ts: at which zstd level). Writes wait for the connection to drain
// (backpressure).
//
// Over SSH one channel carries at most its window per round trip, whatever the link could do. Once enough
// data has gone through the pump to be worth it, it can spread the blocks over extra channels ("lanes"): the
// blocks then take turns, each lane with its own compression stream, and the receiver merges them back in turn
// order (docs/PROTOCOL.md, "Lanes").

import fs from 'node:fs';
import { type BlockEncoder, type Connection, DATA_BLOCK, Frame, createBlockEncoder, type Compression, type ZstdBinding } from '@skysync/protocol';
import { compressLevel, levelFor } from './level.js';

export { compressLevel } from './level.js';

/** An extra channel to the receiver, admitted already (its `lane-hello` answered). */
export interface OpenLane {
  id: number;
  conn: Connection;
  close(): void;
}

/** Opens lanes on demand; the pump calls it once, after `LANE_AFTER_BYTES` of literal data. */
export type LaneOpener = () => Promise<OpenLane[]>;

/** Below this much data one channel does as well: opening lanes costs a round trip or two. */
export const LANE_AFTER_BYTES = 8 * 1024 * 1024;

interface LaneOut {
  conn: Connection;
  encoder: BlockEncoder;
  /** Compressed to raw size of this lane's last block (null before the first). */
  lastRatio: number | null;
}

export class DataPump {
  private block: Buffer = Buffer.allocUnsafe(DATA_BLOCK + 512 * 1024);
  private filled = 0;
  /** Open files by path. Reads are synchronous: for small files a thread-pool round trip costs more. */
  private fds = new Map<string, number>();
  private readonly rootBuf: Buffer;
  /** Literal chunk bytes before compression. */
  bytesLiteral = 0;
  /** Compressed bytes handed to the connection. */
  bytesEncoded = 0;
  /** Main connection first, then the lanes, once the blocks take turns over them. */
  private lanes: LaneOut[] | null = null;
  private turn = 0;
  private laneOpener: LaneOpener | null = null;
  private laneOpening: Promise<void> | null = null;
  private laneReady: OpenLane[] | null = null;
  /** Why lanes were not used, when opening them failed. */
  laneError: string | null = null;
  /** zstd level for data that compresses (codecs without levels ignore it). */
  readonly level = compressLevel();
  private readonly single: LaneOut;

  constructor(
    private readonly conn: Connection,
    compression: Compression,
    zstd: ZstdBinding | null,
    root: string,
  ) {
    this.rootBuf = Buffer.from(root, 'utf8');
    this.newEncoder = () => createBlockEncoder(compression, zstd, this.level);
    this.single = { conn: this.conn, encoder: this.newEncoder(), lastRatio: null };
  }

  private readonly newEncoder: () => BlockEncoder;

  /** Lets the pump open lanes once the data is large enough to gain from them. */
  offerLanes(open: LaneOpener): void {
    this.laneOpener = open;
  }

  /** How many connections carry blocks (1 until lanes are in use). */
  get laneCount(): number {
    return this.lanes?.length ?? 1;
  }

  /** Bytes written to the lanes (not counting the main connection). */
  get laneBytesWritten(): number {
    let n = 0;
    for (const l of this.laneReady ?? []) n += l.conn.bytesWritten;
    return n;
  }

  /** Closes the lanes, once any still being opened are (after `finish`, or when the operation failed). */
  async closeLanes(): Promise<void> {
    this.laneOpener = null;
    await this.laneOpening;
    for (const l of this.laneReady ?? []) l.close();
  }

  private maybeOpenLanes(): void {
    if (!this.laneOpener || this.laneOpening || this.bytesLiteral < LANE_AFTER_BYTES) return;
    const open = this.laneOpener;
    // Opened in the background while the main connection keeps sending; the switch happens at a block boundary.
    this.laneOpening = open().then(
      (lanes) => {
        this.laneReady = lanes;
      },
      (e: Error) => {
        this.laneError = e.message;
      },
    );
  }

  private fd(rel: string): number {
    let fd = this.fds.get(rel);
    if (fd === undefined) {
      // Keep few files open: plans visit files in order, so older ones are done.
      if (this.fds.size >= 16) this.closeFiles();
      const abs = rel === '' ? this.rootBuf : Buffer.concat([this.rootBuf, Buffer.from('/' + rel, 'latin1')]);
      fd = fs.openSync(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      this.fds.set(rel, fd);
    }
    return fd;
  }

  /** Appends `len` bytes of `rel` at `offset`. A file that shrank meanwhile gives a short read: an error. */
  async addFromFile(rel: string, offset: number, len: number): Promise<void> {
    const fd = this.fd(rel);
    while (len > 0) {
      const room = this.block.length - this.filled;
      const n = Math.min(room, len);
      const got = fs.readSync(fd, this.block, this.filled, n, offset);
      if (got !== n) throw new Error(`file changed while it was read: ${Buffer.from(rel, 'latin1').toString()}`);
      this.filled += n;
      this.bytesLiteral += n;
      offset += n;
      len -= n;
      if (this.filled >= DATA_BLOCK) await this.sendBlock();
    }
  }

  /** Reads `len` bytes of `rel` at `offset` through the same open files, without adding them; null if short. */
  readAt(rel: string, offset: number, len: number): Buffer | null {
    const out = Buffer.allocUnsafe(len);
    return fs.readSync(this.fd(rel), out, 0, len, offset) === len ? out : null;
  }

  /** Closes `rel` if it is open, so that the next read opens whatever is at that path now. */
  closeFile(rel: string): void {
    const fd = this.fds.get(rel);
    if (fd === undefined) return;
    this.fds.delete(rel);
    fs.closeSync(fd);
  }

  add(bytes: Buffer): Promise<void> | void {
    if (this.filled + bytes.length > this.block.length) {
      // Fill the block and go on with the rest: a piece larger than a block still splits into whole blocks.
      const room = this.block.length - this.filled;
      bytes.copy(this.block, this.filled, 0, room);
      this.filled += room;
      this.bytesLiteral += room;
      return this.sendBlock().then(() => this.add(bytes.subarray(room)));
    }
    bytes.copy(this.block, this.filled);
    this.filled += bytes.length;
    this.bytesLiteral += bytes.length;
    if (this.filled >= DATA_BLOCK) return this.sendBlock();
  }

  private async sendBlock(): Promise<void> {
    if (this.filled === 0) return;
    // No copy: the encoders copy their input, and `send` copies the payload into the frame before it returns to
    // the event loop, so the block is free again by the time anything writes into it.
    const raw = this.block.subarray(0, this.filled);
    this.filled = 0;
    this.maybeOpenLanes();
    if (!this.lanes && this.laneReady?.length) {
      // Every lane was admitted before the switch is announced, so the receiver knows each one named here.
      await this.conn.sendJson(Frame.Lanes, { lanes: this.laneReady.map((l) => l.id) });
      this.lanes = [this.single, ...this.laneReady.map((l) => ({ conn: l.conn, encoder: this.newEncoder(), lastRatio: null }))];
    }
    const lane = this.lanes ? this.lanes[this.turn++ % this.lanes.length]! : this.single;
    lane.encoder.setLevel?.(levelFor(this.level, lane.lastRatio));
    const out = lane.encoder.encode(raw);
    lane.lastRatio = out.length / raw.length;
    this.bytesEncoded += out.length;
    await lane.conn.send(Frame.Data, out);
  }

  /** Sends what is buffered now instead of waiting for a full block (a relay about to wait for its source). */
  flush(): Promise<void> {
    return this.sendBlock();
  }

  closeFiles(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
  }

  /** Sends what is buffered and the end-of-data frame (on each lane in use, then on the main connection). */
  async finish(): Promise<void> {
    await this.sendBlock();
    this.closeFiles();
    for (const l of this.lanes?.slice(1) ?? []) await l.conn.send(Frame.DataEnd, Buffer.alloc(0));
    await this.conn.send(Frame.DataEnd, Buffer.alloc(0));
  }
}
