// The worker's side of the relay: ask the head for chunks by id, check every chunk against its id as it would the
// client's, and hand them on whole. Wire format: docs/PROTOCOL.md, "Relay".

import { CHUNK_REF_SIZE, type Chunker, writeChunkRef } from '@skysync/chunking';
import { type BlockDecoder, type Connection, Frame, ProtocolError, type RelayOffer, type RelayReport, createBlockDecoder, frameName, remoteError } from '@skysync/protocol';
import { type ConnectOptions, type RelayLink, connect } from './connect.js';

/** Refs per request frame. */
const WANT_BATCH = 16384;

export interface FetchOptions extends ConnectOptions {
  chunker: Chunker;
  /** Gives up when nothing arrives for this long once connected. */
  idleMs?: number;
}

/**
 * Fetches chunks (ids with their lengths, in the receiver's order) from a relay and hands their bytes to
 * `deliver`, whole chunks only and each checked against its id. Never throws: the report says how many chunks
 * arrived, in order, and why it stopped short if it did; the caller takes the rest from the client.
 */
export async function fetchFromRelay(offer: RelayOffer, ids: Buffer[], lens: number[], deliver: (bytes: Buffer) => Promise<void>, opts: FetchOptions): Promise<RelayReport> {
  const t0 = performance.now();
  const report: RelayReport = { chunks: 0, bytes: 0, address: null, error: null, ms: 0 };
  let link: RelayLink;
  try {
    link = await connect(offer, opts);
    report.address = link.address;
  } catch (e) {
    report.error = (e as Error).message;
    report.ms = performance.now() - t0;
    return report;
  }
  try {
    const decoder = createBlockDecoder(link.compression, opts.zstd);
    // Every request up front: the head answers in this order, as fast as it holds the chunks.
    sendWants(link.conn, ids, lens).catch(() => {});
    const intake = new WholeChunks(ids, lens, deliver, opts.chunker, report);
    await receiveChunks(link.conn, decoder, intake, opts.idleMs ?? 60_000);
  } catch (e) {
    report.error = (e as Error).message;
  } finally {
    link.sock.destroy();
    report.ms = performance.now() - t0;
  }
  return report;
}

async function sendWants(conn: Connection, ids: Buffer[], lens: number[]): Promise<void> {
  for (let i = 0; i < ids.length; i += WANT_BATCH) {
    const n = Math.min(WANT_BATCH, ids.length - i);
    const refs = Buffer.allocUnsafe(n * CHUNK_REF_SIZE);
    for (let k = 0; k < n; k++) writeChunkRef(refs, k, ids[i + k]!, lens[i + k]!);
    await conn.send(Frame.RelayWant, refs);
  }
  await conn.send(Frame.PlanEnd, Buffer.alloc(0));
}

/** Reads the head's data frames into `intake` until its data ends; throws when it stops short or goes quiet. */
async function receiveChunks(conn: Connection, decoder: BlockDecoder, intake: WholeChunks, idleMs: number): Promise<void> {
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const f = await Promise.race([
      conn.next(),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`nothing arrived for ${Math.round(idleMs / 1000)} s`)), idleMs))),
    ]).finally(() => clearTimeout(timer));
    if (!f) throw new Error('the head closed the relay connection early');
    if (f.type === Frame.Error) throw remoteError(f.payload);
    if (f.type === Frame.DataEnd) {
      if (!intake.complete) throw new Error('the relay ended before every chunk arrived');
      return;
    }
    if (f.type !== Frame.Data) throw new ProtocolError(`unexpected ${frameName(f.type)} from the relay`);
    await intake.add(decoder.decode(f.payload));
  }
}

/**
 * Cuts the relay's bytes into whole chunks, so that a relay failing midway leaves the stream at a chunk boundary,
 * checks them against their ids and delivers the good ones in order, counting them in the report.
 */
class WholeChunks {
  private readonly pending: Buffer[] = [];
  private pendingLen = 0;

  constructor(
    private readonly ids: Buffer[],
    private readonly lens: number[],
    private readonly deliver: (bytes: Buffer) => Promise<void>,
    private readonly chunker: Chunker,
    private readonly report: RelayReport,
  ) {}

  /** Every chunk arrived and nothing more. */
  get complete(): boolean {
    return this.report.chunks === this.ids.length && this.pendingLen === 0;
  }

  async add(block: Buffer): Promise<void> {
    const { ids, lens, report } = this;
    this.pending.push(block);
    this.pendingLen += block.length;
    let k = report.chunks;
    let whole = 0;
    while (k < ids.length && whole + lens[k]! <= this.pendingLen) whole += lens[k++]!;
    if (k === ids.length && whole < this.pendingLen) throw new ProtocolError('the relay sent more than was asked');
    if (whole === 0) return;
    const bytes = take(this.pending, whole);
    this.pendingLen -= whole;
    const refs = Buffer.allocUnsafe((k - report.chunks) * CHUNK_REF_SIZE);
    for (let c = report.chunks; c < k; c++) writeChunkRef(refs, c - report.chunks, ids[c]!, lens[c]!);
    // Checked here as well as by the builder: a bad chunk from the head then costs a fallback to the client
    // for the rest, not a failed file.
    const bad = await this.chunker.verifyChunks(bytes, refs);
    const good = bad < 0 ? k - report.chunks : bad;
    let goodBytes = 0;
    for (let c = 0; c < good; c++) goodBytes += lens[report.chunks + c]!;
    if (goodBytes) await this.deliver(goodBytes === bytes.length ? bytes : bytes.subarray(0, goodBytes));
    report.chunks += good;
    report.bytes += goodBytes;
    if (bad >= 0) throw new Error('a chunk from the relay does not match its id');
  }
}

/** Joins and removes the first `n` bytes of `parts`. */
function take(parts: Buffer[], n: number): Buffer {
  if (parts[0]!.length === n) return parts.shift()!;
  if (parts[0]!.length > n) {
    const out = parts[0]!.subarray(0, n);
    parts[0] = parts[0]!.subarray(n);
    return out;
  }
  const out = Buffer.allocUnsafe(n);
  let filled = 0;
  while (filled < n) {
    const p = parts[0]!;
    const k = Math.min(p.length, n - filled);
    p.copy(out, filled, 0, k);
    filled += k;
    if (k === p.length) parts.shift();
    else parts[0] = p.subarray(k);
  }
  return out;
}
