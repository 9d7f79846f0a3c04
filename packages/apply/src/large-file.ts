// The stager of large files (and of any file that reuses chunks): runs of chunks are read (from the stream, from
// a file held here, or from a file written earlier in this sync) and written in blocks of up to 8 MiB, each
// chunk verified against its id. Reading the next block and writing the previous one (both in the thread pool)
// overlap with verifying the current one. With the native addon, a whole run of chunks held in one file never
// crosses into JavaScript: the addon copies it in the kernel (`copyHeldChunks`: a reflink or copy_file_range)
// and verifies it in the temp file, while the stream's next blocks are taken. A failure keeps consuming the
// stream so the receiver stays in step with the sender; only the stream ending early ends the file at once
// (nothing more will come).

import fs from 'node:fs';
import { CHUNK_REF_SIZE, writeChunkRef } from '@skysync/chunking';
import { type FileEntry, displayPath } from '@skysync/protocol';
import { finishTemp, type StageContext } from './stage-context.js';
import type { NativeAddon } from '@skysync/chunking';
import type { Piece, Staged } from './types.js';

const BLOCK = 8 * 1024 * 1024;

/**
 * Read buffers for building large files, reused across blocks and files: a fresh 8 MiB buffer per block is
 * external memory that V8 answers with full collections (over 100 ms for a 200 MiB file).
 */
const READ_BUFFERS: Buffer[] = [];
const READ_BUFFERS_KEPT = 4;
const READ_BUFFER_SIZE = 9 * 1024 * 1024;
function takeReadBuffer(len: number): Buffer {
  if (len > READ_BUFFER_SIZE) return Buffer.allocUnsafeSlow(len);
  return READ_BUFFERS.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER_SIZE);
}
function giveReadBuffer(buf: Buffer): void {
  if (buf.buffer.byteLength === READ_BUFFER_SIZE && READ_BUFFERS.length < READ_BUFFERS_KEPT) READ_BUFFERS.push(Buffer.from(buf.buffer, 0, READ_BUFFER_SIZE));
}

interface Run {
  /** First and last piece of the run, and its bytes. */
  i: number;
  j: number;
  len: number;
}

/** Stands for a run the addon copies itself: nothing was read for it. */
const IN_KERNEL = Buffer.alloc(0);

/**
 * The longest runs of pieces of the same kind (and, for held files, contiguous in the same file), up to a block;
 * held runs are not cut when the addon copies them (`heldWhole`).
 */
function runsOf(pieces: Piece[], heldWhole: boolean): Run[] {
  const runs: Run[] = [];
  for (let i = 0; i < pieces.length; i++) {
    const p = pieces[i]!;
    let j = i;
    let runLen = p.len;
    while (j + 1 < pieces.length && (runLen < BLOCK || (heldWhole && p.from === 'disk'))) {
      const q = pieces[j + 1]!;
      if (q.from !== p.from) break;
      if (p.from === 'disk' && (q.from !== 'disk' || q.path !== p.path || q.offset !== p.offset + runLen)) break;
      if (p.from === 'session') break;
      runLen += q.len;
      j++;
    }
    runs.push({ i, j, len: runLen });
    i = j;
  }
  return runs;
}

function quiet<T>(pr: Promise<T>): Promise<T> {
  pr.catch(() => {});
  return pr;
}

function mismatch(q: Piece): Error {
  return new Error(
    q.from === 'disk'
      ? `chunk from ${displayPath(q.path)} does not match its id (changed on this side?)`
      : q.from === 'stream'
        ? 'received chunk does not match its id'
        : 'session chunk does not match its id',
  );
}

/**
 * Writes all of `buf` at `at`: a write may take only part (a disk filling up takes what fits and fails only the
 * next write), and a file that silently lacks its tail would be renamed into place torn.
 */
async function writeAll(fd: number, buf: Buffer, at: number): Promise<void> {
  for (let done = 0; done < buf.length; ) {
    const n = await new Promise<number>((resolve, reject) => fs.write(fd, buf, done, buf.length - done, at + done, (err, written) => (err ? reject(err) : resolve(written))));
    if (n === 0) throw new Error('write: no progress');
    done += n;
  }
}

/** Builds one file; `run()` never rejects: the file ends with its stat or its error. */
export class LargeFileBuilder {
  private fd: number | null = null;
  private failed: string | null = null;
  private off = 0;
  private writing: Promise<void> = Promise.resolve();
  private written: Promise<string | null> | null = null;
  private readonly sources = new Map<string, number>();
  /** Buffers read from disk go back to the pool once written (or dropped); stream buffers are the stream's. */
  private readonly pooled = new Set<Buffer>();
  private readonly runs: Run[];
  private readonly native: NativeAddon | null;

  constructor(
    private readonly ctx: StageContext,
    private readonly s: Staged,
    private readonly e: FileEntry,
    private readonly pieces: Piece[],
  ) {
    this.native = ctx.opts.native ?? null;
    this.runs = runsOf(pieces, this.native !== null);
  }

  async run(): Promise<void> {
    try {
      const temp = this.ctx.tempFor(this.e.path);
      this.fd = this.ctx.guard.createExclusive(temp);
      this.s.temp = temp;
    } catch (err) {
      this.failed = (err as Error).message;
    }
    try {
      await this.copyRuns();
    } finally {
      await this.finish();
    }
  }

  /** A run that repeats a chunk written earlier (perhaps earlier in this file) is read only once the writes
   * before it have landed; other runs are read one ahead. */
  private async copyRuns(): Promise<void> {
    const prefetchable = (r: number): boolean => r < this.runs.length && this.pieces[this.runs[r]!.i]!.from !== 'session';
    let next: Promise<Buffer | null> | null = prefetchable(0) ? quiet(this.fetch(this.runs[0]!)) : null;
    for (let r = 0; r < this.runs.length; r++) {
      const run = this.runs[r]!;
      let buf: Buffer | null = null;
      let fetchError: unknown = null;
      try {
        if (next === null) {
          await this.writing.catch(() => {});
          next = quiet(this.fetch(run));
        }
        buf = await next;
      } catch (err) {
        fetchError = err;
      }
      // Stream data must be taken in order, whatever happens to this run (the rest only while still useful).
      next = prefetchable(r + 1) ? quiet(this.fetch(this.runs[r + 1]!)) : null;
      try {
        if (fetchError) throw fetchError;
        if (this.failed || !buf) {
          this.recycle(buf);
          continue;
        }
        if (buf === IN_KERNEL) {
          await this.copyHeld(run);
          continue;
        }
        await this.verify(run, buf);
        await this.write(run, buf);
      } catch (err) {
        this.failed ??= (err as Error).message;
        if (this.pieces[run.i]!.from === 'stream' && this.ctx.stream.size === 0 && /ended early/.test((err as Error).message)) {
          // Nothing more will come: wait for the read ahead (which fails the same way) and stop.
          await next?.catch(() => {});
          return;
        }
      }
    }
  }

  private refsOf(run: Run): Buffer {
    const refs = Buffer.allocUnsafe((run.j - run.i + 1) * CHUNK_REF_SIZE);
    for (let k = run.i; k <= run.j; k++) writeChunkRef(refs, k - run.i, this.pieces[k]!.id, this.pieces[k]!.len);
    return refs;
  }

  private async verify(run: Run, buf: Buffer): Promise<void> {
    // Hashed off this thread (native): frames keep arriving and the previous block keeps being written.
    const bad = await this.ctx.opts.chunker.verifyChunks(buf, this.refsOf(run));
    if (bad >= 0) {
      this.recycle(buf);
      throw this.badChunk(this.pieces[run.i + bad]!);
    }
  }

  /**
   * A held chunk that does not match was changed on this side without its stat showing it: its file is no
   * longer trusted, so the agent forgets its record and the next push sends those bytes instead of failing again.
   */
  private badChunk(q: Piece): Error {
    if (q.from === 'disk') this.ctx.opts.untrusted.add(q.path);
    return mismatch(q);
  }

  /** Chained like a write: a later run may repeat chunks of this one (`session`), read once it has landed. */
  private async copyHeld(run: Run): Promise<void> {
    await this.writing;
    const at = this.off;
    this.off += run.len;
    const p = this.pieces[run.i] as Extract<Piece, { from: 'disk' }>;
    const copied = this.native!.copyHeldChunks(this.sourceFd(p.path), this.fd!, p.offset, at, this.refsOf(run));
    this.writing = quiet(
      copied.then(
        (bad) => {
          if (bad >= 0) throw this.badChunk(this.pieces[run.i + bad]!);
          this.ctx.bytes.fromDisk += run.len;
          this.register(run, at);
        },
        (err: Error) => {
          throw /shorter than recorded/.test(err.message) ? new Error(`source ${displayPath(p.path)} is shorter than recorded`) : err;
        },
      ),
    );
  }

  private sourceFd(path: string): number {
    let src = this.sources.get(path);
    if (src === undefined) {
      src = this.ctx.guard.openRead(path);
      this.sources.set(path, src);
    }
    return src;
  }

  private async write(run: Run, buf: Buffer): Promise<void> {
    await this.writing;
    const at = this.off;
    this.off += buf.length;
    const fd = this.fd!;
    this.writing = quiet(
      writeAll(fd, buf, at).then(
        () => {
          this.recycle(buf);
          this.register(run, at);
        },
        (err: unknown) => {
          this.recycle(buf);
          throw err;
        },
      ),
    );
  }

  /** Says where the run's chunks are, for later files (and the relay). */
  private register(run: Run, at: number): void {
    this.written ??= Promise.resolve(this.s.temp);
    for (let k = run.i; k <= run.j; k++) {
      const q = this.pieces[k]!;
      this.ctx.remember(q.id.toString('latin1'), { file: this.written, offset: at, len: q.len });
      at += q.len;
    }
  }

  private async fetch(run: Run): Promise<Buffer | null> {
    const p = this.pieces[run.i]!;
    if (p.from === 'stream') {
      const buf = await this.ctx.stream.take(run.len);
      this.ctx.bytes.fromStream += run.len;
      return buf;
    }
    if (this.failed) return null;
    if (p.from === 'disk') {
      // Opened now, so a missing source fails the run here as it always did.
      const src = this.sourceFd(p.path);
      if (this.native) return IN_KERNEL;
      const buf = await this.readAt(src, run.len, p.offset).catch(() => {
        throw new Error(`source ${displayPath(p.path)} is shorter than recorded`);
      });
      this.ctx.bytes.fromDisk += run.len;
      return buf;
    }
    const sc = this.ctx.session.get(p.id.toString('latin1'));
    const file = sc ? await sc.file : null;
    if (!sc || !file) throw new Error('chunk expected from earlier in this sync is missing');
    const h = this.ctx.guard.openRead(file);
    try {
      return await this.readAt(h, p.len, sc.offset);
    } finally {
      fs.closeSync(h);
    }
  }

  private readAt(h: number, len: number, at: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const buf = takeReadBuffer(len).subarray(0, len);
      fs.read(h, buf, 0, len, at, (err, n) => {
        if (err || n !== len) {
          giveReadBuffer(buf);
          reject(err ?? new Error('short read'));
        } else {
          this.pooled.add(buf);
          resolve(buf);
        }
      });
    });
  }

  private recycle(buf: Buffer | null): void {
    if (buf && this.pooled.delete(buf)) giveReadBuffer(buf);
  }

  private async finish(): Promise<void> {
    try {
      await this.writing;
    } catch (err) {
      this.failed ??= (err as Error).message;
    }
    for (const h of this.sources.values()) fs.closeSync(h);
    try {
      if (!this.failed && this.fd !== null) this.s.stat = finishTemp(this.fd, this.e);
    } catch (err) {
      this.failed = (err as Error).message;
    }
    if (this.fd !== null) fs.closeSync(this.fd);
    if (this.failed) this.s.error = this.failed;
  }
}
