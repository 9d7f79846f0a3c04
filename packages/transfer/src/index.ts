// The sending side's data pump: literal chunk bytes, read from local files in plan order, grouped into DATA
// frames and compressed as one stream. Writes wait for the connection to drain (backpressure).

import fs from 'node:fs';
import {
  type BlockEncoder,
  type Connection,
  DATA_BLOCK,
  Frame,
  createBlockEncoder,
  type Compression,
  type ZstdBinding,
} from '@skysync/protocol';

export class DataPump {
  private block: Buffer = Buffer.allocUnsafe(DATA_BLOCK + 512 * 1024);
  private filled = 0;
  private encoder: BlockEncoder;
  /** Open files by path. Reads are synchronous: for small files a thread-pool round trip costs more. */
  private fds = new Map<string, number>();
  private readonly rootBuf: Buffer;
  /** Literal chunk bytes before compression. */
  bytesLiteral = 0;
  /** Compressed bytes handed to the connection. */
  bytesEncoded = 0;

  constructor(
    private readonly conn: Connection,
    compression: Compression,
    zstd: ZstdBinding | null,
    root: string,
    level = 3,
  ) {
    this.encoder = createBlockEncoder(compression, zstd, level);
    this.rootBuf = Buffer.from(root, 'utf8');
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
      return this.sendBlock().then(() => this.add(bytes));
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
    const out = this.encoder.encode(raw);
    this.bytesEncoded += out.length;
    await this.conn.send(Frame.Data, out);
  }

  /** Sends what is buffered now instead of waiting for a full block (a relay about to wait for its source). */
  flush(): Promise<void> {
    return this.sendBlock();
  }

  closeFiles(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
  }

  /** Sends what is buffered and the end-of-data frame. */
  async finish(): Promise<void> {
    await this.sendBlock();
    this.closeFiles();
    await this.conn.send(Frame.DataEnd, Buffer.alloc(0));
  }
}
