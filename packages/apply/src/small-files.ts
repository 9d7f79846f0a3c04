// The stager of small files: a file of up to SMALL_FILE bytes whose chunks all come from the stream is taken in
// stream order and joins a batch that the native writer (`writeFiles`) writes on its own threads, each file
// into a temp file in its directory opened component by component without following symlinks. Without the
// writer (or for a file whose directory is not one yet) the file is written whole here, synchronously.

import fs from 'node:fs';
import { WRITE_RECORD, chunkRefCount, chunkRefId, chunkRefLen, readWriteStat } from '@skysync/chunking';
import { type FileEntry, parentOf } from '@skysync/protocol';
import { finishTemp, type StageContext } from './stage-context.js';
import { tempName } from './temp-names.js';
import type { Piece, Staged, Writer } from './types.js';

/** Files up to this size whose bytes all come from the stream are written whole (in batches, when native). */
export const SMALL_FILE = 256 * 1024;
/** A batch goes to the writer at this many files or bytes, with at most BATCHES_IN_FLIGHT being written: enough
 * to keep the writer's threads busy while this thread takes the next files from the stream, and a bounded amount
 * of memory. */
const BATCH_FILES = 256;
const BATCH_BYTES = 8 * 1024 * 1024;
const BATCHES_IN_FLIGHT = 2;
/** A file's digest fills its write record from `WRITE_RECORD.digest` to the end. */
const DIGEST_SIZE = WRITE_RECORD.size - WRITE_RECORD.digest;

/** Small files whose bytes were taken from the stream, waiting to be written together. */
interface Batch {
  files: Staged[];
  temps: string[];
  /** The files' bytes one after another (`bytes` of them), and their records; reused by later batches. */
  data: Buffer;
  layout: Buffer;
  refs: Buffer[];
  bytes: number;
  /** Settles once every file of the batch is written or has its error. */
  written: Promise<void>;
  settle: () => void;
}

export class SmallFileBatches {
  private pending: Batch | null = null;
  private readonly inFlight = new Set<Promise<void>>();
  /** Buffers of finished batches, for the next ones: fresh 8 MiB buffers cost a page fault per 4 KiB. */
  private readonly spare: Array<{ data: Buffer; layout: Buffer }> = [];

  constructor(
    private readonly ctx: StageContext,
    private readonly writer: Writer,
    /** Need mode: ids the plan takes more than once (only those are read back), else null. */
    private readonly repeated: () => Set<string> | null,
  ) {}

  /** Whether a file of `bytes` more would overflow the pending batch. */
  wouldOverflow(bytes: number): boolean {
    return this.pending !== null && this.pending.bytes + bytes > BATCH_BYTES;
  }

  get full(): boolean {
    return (this.pending?.files.length ?? 0) >= BATCH_FILES;
  }

  /**
   * Queues a small file, whose bytes were just taken from the stream (in plan order), for the native writer: it
   * creates missing directories (never through a symlink), checks the file's digest and chunks, writes it into a
   * temp file in its directory and sets its mode and mtime. Its chunks are available to later files once its
   * batch is written.
   */
  add(s: Staged, e: FileEntry, refs: Buffer[], keys: string[], bytes: Buffer): void {
    const temp = tempName(parentOf(e.path));
    const b = (this.pending ??= this.newBatch());
    bytes.copy(b.data, b.bytes);
    const rec = b.files.length * WRITE_RECORD.size;
    b.layout.writeUInt32LE(e.size, rec + WRITE_RECORD.fileSize);
    b.layout.writeUInt32LE(keys.length, rec + WRITE_RECORD.chunkCount);
    b.layout.writeUInt32LE(e.mode, rec + WRITE_RECORD.mode);
    b.layout.writeUInt32LE(e.mtimeNsec, rec + WRITE_RECORD.mtimeNsec);
    b.layout.writeBigInt64LE(BigInt(e.mtimeSec), rec + WRITE_RECORD.mtimeSec);
    e.digest.copy(b.layout, rec + WRITE_RECORD.digest, 0, DIGEST_SIZE);
    b.files.push(s);
    b.temps.push(temp);
    b.refs.push(...refs);
    b.bytes += e.size;
    s.temp = temp;
    const repeated = this.repeated();
    let file: Promise<string | null> | null = null;
    let off = 0;
    for (let i = 0, k = 0; i < refs.length; i++) {
      for (let j = 0, n = chunkRefCount(refs[i]!); j < n; j++, k++) {
        const key = keys[k]!;
        const len = chunkRefLen(refs[i]!, j);
        if (!repeated || repeated.has(key) || this.ctx.opts.onChunk) {
          file ??= b.written.then(() => (s.error ? null : s.temp));
          this.ctx.remember(key, { file, offset: off, len });
        }
        off += len;
      }
    }
  }

  /** Hands the pending batch to the writer, after waiting for room among the batches in flight. */
  async flush(): Promise<void> {
    const b = this.pending;
    if (!b) return;
    this.pending = null;
    while (this.inFlight.size >= BATCHES_IN_FLIGHT) await Promise.race(this.inFlight);
    const p: Promise<void> = this.writeBatch(b).finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  /** Waits for every batch handed to the writer. */
  async settled(): Promise<void> {
    await Promise.all(this.inFlight);
  }

  private newBatch(): Batch {
    const bufs = this.spare.pop() ?? { data: Buffer.allocUnsafe(BATCH_BYTES), layout: Buffer.allocUnsafe(BATCH_FILES * WRITE_RECORD.size) };
    let settle!: () => void;
    const written = new Promise<void>((resolve) => (settle = resolve));
    return { files: [], temps: [], refs: [], ...bufs, bytes: 0, written, settle };
  }

  /** Never rejects: each file gets its stat or its error. */
  private async writeBatch(b: Batch): Promise<void> {
    const n = b.files.length;
    if (this.ctx.aborted) {
      // Nothing of this batch was created.
      for (const s of b.files) {
        s.temp = null;
        s.error ??= 'the sync was aborted';
      }
      this.spare.push({ data: b.data, layout: b.layout });
      b.settle();
      return;
    }
    try {
      const out = await this.writer.writeFiles(
        this.ctx.opts.root,
        b.temps.join('\0'),
        b.layout.subarray(0, n * WRITE_RECORD.size),
        b.data.subarray(0, b.bytes),
        Buffer.concat(b.refs),
        true,
      );
      const retry = new Set<number>();
      for (const f of out.failures) {
        const s = b.files[f.index]!;
        // The writer removed what it had created.
        s.temp = null;
        // A parent that is a file or a symlink (which this plan may replace with a directory): stage this one
        // at the root, as the one-by-one path does.
        if (f.kind === 'parent') retry.add(f.index);
        else s.error = f.message;
      }
      for (let i = 0, at = 0; i < n; i++) {
        const s = b.files[i]!;
        const size = b.layout.readUInt32LE(i * WRITE_RECORD.size + WRITE_RECORD.fileSize);
        if (retry.has(i)) this.writeAlone(s, b.data.subarray(at, at + size));
        else if (!s.error) s.stat = readWriteStat(out.stats, i);
        at += size;
      }
    } catch (err) {
      // Whatever was created is removed with the other temp files.
      for (const s of b.files) s.error ??= (err as Error).message;
    } finally {
      this.spare.push({ data: b.data, layout: b.layout });
      b.settle();
    }
  }

  /** A file of a batch that the writer could not place in its directory, written by the one-by-one path. */
  private writeAlone(s: Staged, bytes: Buffer): void {
    const e = s.entry as FileEntry;
    const pieces: Piece[] = [];
    for (const op of e.ops) {
      if (op.op !== 'chunks') continue;
      for (let i = 0, n = chunkRefCount(op.chunks); i < n; i++) {
        pieces.push({ from: 'stream', id: chunkRefId(op.chunks, i), len: chunkRefLen(op.chunks, i) });
      }
    }
    writeWhole(this.ctx, s, e, pieces, bytes);
  }
}

/**
 * Writes a small file whole, synchronously: five syscalls beat five thread-pool round trips. Used where the
 * native batch writer is not available. Returns the temp file (set on `s` as well) even when it failed, for the
 * cleanup.
 */
export function writeWhole(ctx: StageContext, s: Staged, e: FileEntry, pieces: Piece[], bytes: Buffer): string | null {
  let fd: number | null = null;
  try {
    let off = 0;
    for (const p of pieces) {
      if (!ctx.opts.chunker.blake3(bytes.subarray(off, off + p.len)).equals(p.id)) {
        throw new Error('received chunk does not match its id');
      }
      off += p.len;
    }
    const temp = ctx.tempFor(e.path);
    fd = ctx.guard.createExclusive(temp);
    s.temp = temp;
    // A write may take only part (a disk filling up): the rest is asked for until it fails.
    for (let off = 0; off < bytes.length; ) off += fs.writeSync(fd, bytes, off, bytes.length - off, off);
    s.stat = finishTemp(fd, e);
    return temp;
  } catch (err) {
    s.error = (err as Error).message;
    return s.temp;
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}
