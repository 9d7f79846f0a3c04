// Framing. Each side first writes MAGIC, then frames: u32 LE length (type byte + payload), u8 type, payload.
// The reader skips anything before MAGIC, so a login shell that prints a banner cannot break the stream.
// See docs/PROTOCOL.md.

import type { Readable, Writable } from 'node:stream';
import { ProtocolError } from './binary.js';
import { ErrorMessage } from './messages.js';

export const MAGIC = Buffer.from('\u0000SKYSYNC\u0001', 'latin1');
export const PROTOCOL_VERSION = 1;
/** Larger frames are refused before any allocation. */
export const MAX_FRAME = 16 * 1024 * 1024;
/** How much noise before MAGIC is tolerated (a chatty .bashrc), before giving up. */
export const MAX_PREAMBLE = 1024 * 1024;

export enum Frame {
  Hello = 1,
  Begin = 2,
  State = 3,
  Entries = 4,
  PlanEnd = 5,
  Need = 6,
  Data = 7,
  DataEnd = 8,
  Done = 9,
  Error = 10,
  Plan = 11,
  /** Client: this operation is over, hold nothing for it (the session stays open for another begin). */
  End = 12,
  /** First frame of a relay connection (worker -> head chunk server), both ways. */
  RelayHello = 13,
  /** Worker -> chunk server: packed chunk refs (32-byte id + u32 LE length) to send, in this order. */
  RelayWant = 14,
  /** First frame of a lane (an extra channel for chunk data), both ways: the token from the client, then an ack. */
  LaneHello = 15,
  /** Sender, on the main connection: from the next data block on, blocks take turns over these lanes. */
  Lanes = 16,
  /** Client, bucket fetch: a batch of the bucket's listing for the destination (JSON `bucket objects`). */
  BucketObjects = 17,
  /** Agent, bucket fetch: the objects it has to fetch, and the keys it refuses (JSON `bucket want`). */
  BucketWant = 18,
  /** Client, bucket fetch: a batch of read grants for the wanted objects (JSON `bucket grants`). */
  BucketGrants = 19,
  /** Agent, only to a client whose begin asked (`notices`): a line for the user while it waits (JSON `notice`). */
  Notice = 20,
  /** Agent, bucket fetch, when the begin asked (`progress`): objects and bytes fetched so far (JSON `bucket progress`). */
  BucketProgress = 21,
}

const FRAME_NAMES: Record<number, string> = {
  1: 'hello',
  2: 'begin',
  3: 'state',
  4: 'entries',
  5: 'plan-end',
  6: 'need',
  7: 'data',
  8: 'data-end',
  9: 'done',
  10: 'error',
  11: 'plan',
  12: 'end',
  13: 'relay-hello',
  14: 'relay-want',
  15: 'lane-hello',
  16: 'lanes',
  17: 'bucket-objects',
  18: 'bucket-want',
  19: 'bucket-grants',
  20: 'notice',
  21: 'bucket-progress',
};

export function frameName(t: number): string {
  return FRAME_NAMES[t] ?? `unknown(${t})`;
}

export function encodeFrame(type: number, payload: Uint8Array): Buffer {
  if (payload.length + 1 > MAX_FRAME) throw new ProtocolError(`frame too large: ${payload.length}`);
  const head = Buffer.allocUnsafe(5);
  head.writeUInt32LE(payload.length + 1, 0);
  head[4] = type;
  return Buffer.concat([head, payload]);
}

export interface FrameMessage {
  type: number;
  payload: Buffer;
}

/**
 * Incremental decoder: feed bytes, take frames. Before the first frame it looks for MAGIC; what precedes it is
 * kept as `preamble` so an error can show what the remote printed instead.
 */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private synced = false;
  preamble = '';

  push(chunk: Buffer): FrameMessage[] {
    this.pending.push(chunk);
    this.pendingLen += chunk.length;
    const out: FrameMessage[] = [];
    if (this.synced && !this.frameComplete()) return out;
    let buf = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingLen);
    let pos = 0;
    if (!this.synced) {
      const at = buf.indexOf(MAGIC);
      if (at < 0) {
        // Keep the tail that could be the start of MAGIC.
        const keep = Math.min(buf.length, MAGIC.length - 1);
        this.preamble += buf.toString('utf8', 0, buf.length - keep);
        if (this.preamble.length > MAX_PREAMBLE) {
          throw new ProtocolError('no skysync agent answered (only other output arrived)');
        }
        buf = buf.subarray(buf.length - keep);
        this.pending = [buf];
        this.pendingLen = buf.length;
        return out;
      }
      this.preamble += buf.toString('utf8', 0, at);
      pos = at + MAGIC.length;
      this.synced = true;
    }
    while (buf.length - pos >= 5) {
      const len = buf.readUInt32LE(pos);
      if (len < 1 || len > MAX_FRAME) throw new ProtocolError(`malformed frame: length ${len}`);
      if (buf.length - pos - 4 < len) break;
      const type = buf[pos + 4]!;
      // A frame that is most of the buffer (a data block joined from many reads) needs no copy; smaller ones are
      // copied so they do not pin it.
      const body = buf.subarray(pos + 5, pos + 4 + len);
      out.push({ type, payload: body.length * 2 >= buf.length ? body : copyOf(body) });
      pos += 4 + len;
    }
    const rest = buf.subarray(pos);
    this.pending = rest.length ? [rest] : [];
    this.pendingLen = rest.length;
    return out;
  }

  /**
   * Whether the pending bytes hold at least one whole frame. Checked before concatenating, so a large frame
   * arriving in many small reads is joined once, not once per read.
   */
  private frameComplete(): boolean {
    if (this.pendingLen < 5) return false;
    let head: Buffer = this.pending[0]!;
    if (head.length < 4) head = Buffer.concat(this.pending, Math.min(this.pendingLen, 8));
    const len = head.readUInt32LE(0);
    // A bad length is reported by the full parse.
    return len < 1 || len > MAX_FRAME || this.pendingLen >= 4 + len;
  }
}

/**
 * A framed, bidirectional connection over any pair of byte streams (a child's stdio, an SSH channel).
 * Writes respect backpressure; reads are pulled one frame at a time.
 */
/** Bytes a sender may queue ahead of the transport before it waits for it to drain. */
const SEND_AHEAD = 8 * 1024 * 1024;

export class Connection {
  private decoder = new FrameDecoder();
  private queue: FrameMessage[] = [];
  private waiters: Array<{ resolve: (f: FrameMessage | null) => void; reject: (e: Error) => void }> = [];
  private ended = false;
  private failure: Error | null = null;
  /**
   * The output closed: it will never drain again. An SSH channel whose connection died keeps taking writes (and
   * never calls them back), so a send after its close would wait forever; it fails instead.
   */
  private outputClosed = false;
  bytesWritten = 0;
  bytesRead = 0;

  /**
   * `maxQueued`: frames read ahead of the handler before reading pauses. Many small frames are the plan's; a peer
   * on a fast network sending 1 MiB data frames is held to fewer.
   */
  constructor(
    private readonly input: Readable,
    private readonly output: Writable,
    private readonly maxQueued = 256,
    /** The magic and first frames, when they went out already (`Connection.prelude`). */
    sent: Buffer | null = null,
  ) {
    if (!sent) output.write(MAGIC);
    this.bytesWritten += sent ? sent.length : MAGIC.length;
    input.on('data', (chunk: Buffer) => {
      this.bytesRead += chunk.length;
      let frames: FrameMessage[];
      try {
        frames = this.decoder.push(chunk);
      } catch (e) {
        this.fail(e as Error);
        return;
      }
      for (const f of frames) {
        const w = this.waiters.shift();
        if (w) w.resolve(f);
        else this.queue.push(f);
      }
      // Backpressure on the reading side: stop reading while many frames wait to be handled.
      if (this.queue.length > this.maxQueued) input.pause();
    });
    input.on('end', () => {
      this.ended = true;
      for (const w of this.waiters.splice(0)) w.resolve(null);
    });
    input.on('error', (e) => this.fail(e));
    output.on('error', (e) => this.fail(e));
    output.on('close', () => (this.outputClosed = true));
  }

  get preamble(): string {
    return this.decoder.preamble;
  }

  private fail(e: Error): void {
    if (this.failure) return;
    this.failure = e;
    for (const w of this.waiters.splice(0)) w.reject(e);
  }

  /** The next frame, or null at the end of the stream. */
  next(): Promise<FrameMessage | null> {
    if (this.failure) return Promise.reject(this.failure);
    const f = this.queue.shift();
    if (this.queue.length < this.maxQueued / 4) this.input.resume();
    if (f) return Promise.resolve(f);
    if (this.ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /**
   * The next frame, which must be of `type` (an Error frame from the peer becomes an exception). With
   * `onNotice`, notice frames before it are handed there (a peer sends them only when asked).
   */
  async expect(type: number, onNotice?: (payload: Buffer) => void): Promise<FrameMessage> {
    let f = await this.next();
    while (f && onNotice && f.type === Frame.Notice) {
      onNotice(f.payload);
      f = await this.next();
    }
    if (!f) throw new ProtocolError(`connection closed while waiting for ${frameName(type)}`);
    if (f.type === Frame.Error) throw remoteError(f.payload);
    if (f.type !== type) throw new ProtocolError(`expected ${frameName(type)}, got ${frameName(f.type)}`);
    return f;
  }

  async send(type: number, payload: Uint8Array): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.outputClosed) throw new ProtocolError(`connection closed while sending ${frameName(type)}`);
    const frame = encodeFrame(type, payload);
    this.bytesWritten += frame.length;
    // Keep several megabytes in flight: waiting for every frame to drain through a 64 KiB pipe or an SSH window
    // turns the transfer into stop-and-wait between two busy event loops.
    if (!this.output.write(frame) && this.output.writableLength > SEND_AHEAD) {
      await new Promise<void>((resolve, reject) => {
        const settle = (e?: Error): void => {
          this.output.off('drain', onDrain);
          this.output.off('error', onError);
          this.output.off('close', onClose);
          if (e) reject(e);
          else resolve();
        };
        const onDrain = (): void => settle();
        const onError = (e: Error): void => settle(e);
        const onClose = (): void => settle(new ProtocolError(`connection closed while sending ${frameName(type)}`));
        this.output.once('drain', onDrain);
        this.output.once('error', onError);
        this.output.once('close', onClose);
      });
    }
  }

  /** The magic and these frames, for a transport to write before the connection exists. */
  static prelude(frames: Array<[type: number, value: unknown]>): Buffer {
    return Buffer.concat([MAGIC, ...frames.map(([type, value]) => encodeFrame(type, Buffer.from(JSON.stringify(value), 'utf8')))]);
  }

  sendJson(type: number, value: unknown): Promise<void> {
    return this.send(type, Buffer.from(JSON.stringify(value), 'utf8'));
  }

  end(): void {
    this.output.end();
  }
}

export class RemoteError extends Error {
  override name = 'RemoteError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** The peer's error frame as an exception; one that does not fit the error message's shape says so. */
export function remoteError(payload: Buffer): RemoteError {
  try {
    const e = ErrorMessage.decode(payload);
    return new RemoteError(e.message, e.code);
  } catch (e) {
    return new RemoteError(`remote error (${(e as Error).message})`, 'remote');
  }
}

/** A copy without the zero fill of `Buffer.from`. */
function copyOf(b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(b.length);
  b.copy(out);
  return out;
}
