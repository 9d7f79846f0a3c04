// The receiving side of a sync (the agent on push, the client on pull): stage, then transition.
//
// Stage: every new or changed file is built in a temp file from chunks already held (anywhere under the root,
// each verified against its id as it is read) and chunks from the data stream (verified too); the recipe's
// digest is checked before anything is written; mode and mtime are set on the temp file. Small files that come
// whole from the stream are written in batches by the native addon, in parallel off this thread.
// Transition: removals first (deepest first), then directories, then renames into place, then directory modes.
// Old content is never touched until every temp file is built, so renames and copies can use it.
//
// Safety: every path is relative and checked; no parent component may be a symlink; temp files are created
// with O_EXCL|O_NOFOLLOW; nothing is written outside the root.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Chunker, NativeAddon } from '@skysync/chunking';
import {
  CHUNK_REF_SIZE,
  type DeleteMode,
  type FileEntry,
  type FileFailure,
  type PlanEntry,
  displayPath,
  parentOf,
  trace,
} from '@skysync/protocol';
import { DataStream } from './data-stream.js';

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_RDONLY } = fs.constants;
/** Files from this size on are put in place by exchanging names (see `ReceiverOptions.replaceFile`). */
const REPLACE_NATIVE_FROM = 1 << 20;

export interface StatKey {
  size: number;
  mtimeNs: string;
  ino: string;
}

export interface PlacedRecord {
  kind: 'file' | 'dir' | 'symlink';
  mode: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  target?: string;
  /** Packed chunk list (36 bytes a chunk). */
  chunks?: Buffer;
  digest?: Buffer;
  /** What lstat said right after placing: any later difference is drift. */
  stat: StatKey;
}

export interface HeldChunks {
  /** The packed recipe of a file the receiver placed, as it recorded it. */
  recipeOf(path: string): Buffer | null;
  /** Where chunks can be found under the root, by id. */
  locate(ids: Buffer[]): Array<{ path: string; offset: number } | null>;
  /** The record of what is at `path` now, when the receiver placed it and it is unchanged since. */
  current?(path: string): PlacedRecord | null;
}

export interface ReceiverOptions {
  root: string;
  chunker: Chunker;
  held: HeldChunks;
  /** Paths whose bytes no longer match what was recorded: never read as a source, never deleted. */
  untrusted: Set<string>;
  isPlaced: (path: string) => boolean;
  deleteMode: DeleteMode;
  /**
   * Puts a temp file over an existing regular file without waiting for the old one to be freed (the native
   * addon's `replaceFile`); without it, a plain rename.
   */
  replaceFile?: (temp: Buffer, dest: Buffer) => void;
  /** Writes and renames files in batches off this thread when it has `writeFiles` (an older addon may not). */
  native?: NativeAddon | null;
  /**
   * Remember where every received chunk was written, and say so as each lands: the head of a relayed push
   * serves other nodes from this sync's files while it is still receiving (need mode otherwise remembers only
   * the chunks the plan takes twice).
   */
  onChunk?: (key: string) => void;
}

export interface ReceiveResult {
  placed: Map<string, PlacedRecord>;
  removed: string[];
  forgotten: string[];
  kept: string[];
  failed: FileFailure[];
  written: number;
}

export class RefusedPath extends Error {
  override name = 'RefusedPath';
}

type Piece =
  | { from: 'disk'; path: string; offset: number; id: Buffer; len: number }
  | { from: 'stream'; id: Buffer; len: number }
  | { from: 'session'; id: Buffer; len: number };

interface Staged {
  entry: PlanEntry;
  /** The temp file, relative to the root (latin1, as paths). */
  temp: string | null;
  error: string | null;
  /** fstat of the finished temp file: inode, size and mtime survive the rename. */
  stat?: StatKey;
  /** The file in place already has the entry's bytes: only its mode and mtime change. */
  retouch?: PlacedRecord;
}

/** Where a chunk received earlier in this sync sits: `file` settles to the temp file (relative to the root) once
 * its bytes are on disk (small files are written in batches), or to null when that write failed. One promise per
 * file, shared by its chunks. */
export interface SessionChunk {
  file: Promise<string | null>;
  offset: number;
  len: number;
}

/** Files up to this size whose bytes all come from the stream are written whole (in batches, when native). */
const SMALL_FILE = 256 * 1024;
/** A batch goes to the writer at this many files or bytes, with at most BATCHES_IN_FLIGHT being written: enough
 * to keep the writer's threads busy while this thread takes the next files from the stream, and a bounded amount
 * of memory. */
const BATCH_FILES = 256;
const BATCH_BYTES = 8 * 1024 * 1024;
const BATCHES_IN_FLIGHT = 2;
/** Renames handed to the native side at once in the transition. */
const RENAME_BATCH = 1024;
/** Bytes of one file's record in `writeFiles`' layout: size, chunk count, mode, mtime nsec (u32 each), mtime sec
 * (i64), digest (32 bytes). */
const RECORD = 56;
const NO_BYTES = Buffer.alloc(0);

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

type Writer = Pick<NativeAddon, 'writeFiles' | 'renameFiles'>;

/** The errno names Node's fs errors carry as `code`, by number. */
const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

export class Receiver {
  readonly stream = new DataStream();
  private readonly rootBuf: Buffer;
  private readonly staged: Staged[] = [];
  private readonly session = new Map<string, SessionChunk>();
  /** Ids whose bytes the stream carries once, claimed by the first file (in plan order) that uses them. */
  private readonly claimed = new Set<string>();
  private readonly goodDirs = new Set<string>(['']);
  private readonly prefixCache = new Map<string, Float64Array>();
  private stagingDir: string | null = null;
  /** Entries that matched what is already in place. */
  private readonly unchanged = new Map<string, PlacedRecord>();
  /** Need mode: ids resolved before building (local location or "comes from the stream"). */
  private resolved: Map<string, { path: string; offset: number } | 'stream'> | null = null;
  /** Need mode: ids the plan takes more than once. Only their bytes are ever read back from this sync's files. */
  private repeated: Set<string> | null = null;
  private queue: Promise<void> = Promise.resolve();
  private readonly writer: Writer | null;
  private pending: Batch | null = null;
  private readonly inFlight = new Set<Promise<void>>();
  /** Buffers of finished batches, for the next ones: fresh 8 MiB buffers cost a page fault per 4 KiB. */
  private readonly spare: Array<{ data: Buffer; layout: Buffer }> = [];
  private aborted = false;
  bytesFromStream = 0;
  bytesFromDisk = 0;

  constructor(private readonly opts: ReceiverOptions) {
    this.rootBuf = Buffer.from(opts.root, 'utf8');
    const n = opts.native;
    this.writer = n && typeof n.writeFiles === 'function' && typeof n.renameFiles === 'function' ? n : null;
  }

  private abs(rel: string): Buffer {
    return rel === '' ? this.rootBuf : Buffer.concat([this.rootBuf, Buffer.from('/' + rel, 'latin1')]);
  }

  private remember(key: string, sc: SessionChunk): void {
    this.session.set(key, sc);
    this.opts.onChunk?.(key);
  }

  /** Where a chunk of this sync was written: `file` settles to its temp file (relative to the root) once its bytes
   * are on disk, or to null when that write failed. Temp files are renamed into place by the transition. */
  received(key: string): SessionChunk | undefined {
    return this.session.get(key);
  }

  /**
   * Data mode: files are built as their entries arrive, taking literal chunks from the stream in order.
   * Need mode: call `resolveNeeds` after the whole plan arrived, then `buildAll`.
   */
  add(entries: PlanEntry[], buildNow: boolean): void {
    const build: Staged[] = [];
    for (const e of entries) {
      // A file that is already here exactly as described (a push that lost its state describes everything):
      // keep it instead of rebuilding it.
      if (e.kind === 'file' && !this.opts.untrusted.has(e.path)) {
        const cur = this.opts.held.current?.(e.path);
        const sameContent = cur?.kind === 'file' && cur.size === e.size && !!cur.digest?.equals(e.digest);
        if (sameContent && cur!.mode === e.mode && cur!.mtimeSec === e.mtimeSec && cur!.mtimeNsec === e.mtimeNsec && e.ops.every((op) => op.op === 'chunks')) {
          this.unchanged.set(e.path, cur!);
          continue;
        }
        // Same bytes, new mode or mtime (a touched file): change the metadata in place instead of rewriting the
        // file. Only when no op takes bytes from the stream, so the receiver stays in step with the sender.
        if (sameContent && e.ops.every((op) => op.op === 'copy')) {
          this.staged.push({ entry: e, temp: null, error: null, retouch: cur! });
          continue;
        }
      }
      const s: Staged = { entry: e, temp: null, error: null };
      this.staged.push(s);
      if (buildNow && e.kind === 'file') build.push(s);
    }
    if (build.length) this.queue = this.queue.then(() => this.buildMany(build));
  }

  /** Need mode: the byte length of each id `resolveNeeds` returned, in the same order. */
  neededLengths: number[] = [];

  /** Need mode: which chunk ids must come over the wire, in the order the builder will take them. */
  resolveNeeds(): Buffer[] {
    const resolved = new Map<string, { path: string; offset: number } | 'stream'>();
    const repeated = new Set<string>();
    const ids: Buffer[] = [];
    const lens: number[] = [];
    for (const s of this.staged) {
      if (s.entry.kind !== 'file') continue;
      for (const op of s.entry.ops) {
        if (op.op !== 'chunks') continue;
        for (let o = 0; o < op.chunks.length; o += CHUNK_REF_SIZE) {
          const id = op.chunks.subarray(o, o + 32);
          const key = id.toString('latin1');
          if (!resolved.has(key)) {
            resolved.set(key, 'stream');
            ids.push(id);
            lens.push(op.chunks.readUInt32LE(o + 32));
          } else repeated.add(key);
        }
      }
    }
    const found = this.opts.held.locate(ids);
    const needed: Buffer[] = [];
    this.neededLengths = [];
    ids.forEach((id, i) => {
      const loc = found[i];
      if (loc && !this.opts.untrusted.has(loc.path)) resolved.set(id.toString('latin1'), loc);
      else {
        needed.push(id);
        this.neededLengths.push(lens[i]!);
      }
    });
    this.resolved = resolved;
    this.repeated = repeated;
    return needed;
  }

  buildAll(): void {
    const build = this.staged.filter((s) => s.entry.kind === 'file' && !s.retouch);
    this.queue = this.queue.then(() => this.buildMany(build));
  }

  /** Waits for every file to be staged (the data stream must be ended by then). */
  async staged_(): Promise<void> {
    try {
      await this.queue;
    } finally {
      await this.flush();
      await Promise.all(this.inFlight);
    }
  }

  private prefixSums(path: string, recipe: Buffer): Float64Array {
    let p = this.prefixCache.get(path);
    if (!p) {
      const n = recipe.length / CHUNK_REF_SIZE;
      p = new Float64Array(n + 1);
      for (let i = 0; i < n; i++) p[i + 1] = p[i]! + recipe.readUInt32LE(i * CHUNK_REF_SIZE + 32);
      this.prefixCache.set(path, p);
    }
    return p;
  }

  /**
   * Expands the entry's ops into pieces. Never throws: the stream pieces it claims must be consumed even when
   * the file cannot be built, or the receiver would fall out of step with the sender.
   */
  private pieces(e: FileEntry): { pieces: Piece[]; packed: Buffer; error: string | null } {
    const pieces: Piece[] = [];
    const refs: Buffer[] = [];
    let error: string | null = null;
    for (const op of e.ops) {
      if (op.op === 'copy') {
        const from = op.from ?? e.path;
        const recipe = this.opts.held.recipeOf(from);
        if (!recipe) {
          error ??= `copy source ${displayPath(from)} is not held here`;
          continue;
        }
        if (this.opts.untrusted.has(from)) {
          error ??= `copy source ${displayPath(from)} changed on this side`;
          continue;
        }
        const n = recipe.length / CHUNK_REF_SIZE;
        if (op.start + op.count > n) {
          error ??= `copy op beyond the recipe of ${displayPath(from)}`;
          continue;
        }
        const sums = this.prefixSums(from, recipe);
        for (let i = op.start; i < op.start + op.count; i++) {
          const ref = recipe.subarray(i * CHUNK_REF_SIZE, (i + 1) * CHUNK_REF_SIZE);
          refs.push(ref);
          pieces.push({ from: 'disk', path: from, offset: sums[i]!, id: ref.subarray(0, 32), len: ref.readUInt32LE(32) });
        }
      } else {
        for (let o = 0; o < op.chunks.length; o += CHUNK_REF_SIZE) {
          const ref = op.chunks.subarray(o, o + CHUNK_REF_SIZE);
          refs.push(ref);
          const id = ref.subarray(0, 32);
          const len = ref.readUInt32LE(32);
          const key = id.toString('latin1');
          const local = this.resolved?.get(key);
          if (local && local !== 'stream') pieces.push({ from: 'disk', path: local.path, offset: local.offset, id, len });
          else if (this.claimed.has(key)) pieces.push({ from: 'session', id, len });
          else {
            this.claimed.add(key);
            pieces.push({ from: 'stream', id, len });
          }
        }
      }
    }
    return { pieces, packed: Buffer.concat(refs), error };
  }

  /**
   * Creates the directories of `rel` under the root; refuses to pass through a symlink or a non-directory.
   * Synchronous on purpose: the answer is almost always cached, and a thread-pool round trip per file costs
   * more than the syscalls.
   */
  private ensureDir(rel: string): void {
    if (this.goodDirs.has(rel)) return;
    let cur = '';
    for (const part of rel.split('/')) {
      cur = cur ? `${cur}/${part}` : part;
      if (this.goodDirs.has(cur)) continue;
      let st: fs.Stats | undefined = fs.lstatSync(this.abs(cur), { throwIfNoEntry: false });
      if (!st) {
        try {
          fs.mkdirSync(this.abs(cur), { mode: 0o755 });
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
          st = fs.lstatSync(this.abs(cur));
          if (!st.isDirectory()) throw new RefusedPath(`${displayPath(cur)} is not a directory`);
        }
      } else if (st.isSymbolicLink()) {
        throw new RefusedPath(`refused: ${displayPath(cur)} is a symlink (skysync never writes through one)`);
      } else if (!st.isDirectory()) {
        throw new RefusedPath(`${displayPath(cur)} is not a directory`);
      }
      this.goodDirs.add(cur);
    }
  }

  /** A parent chain that holds no symlink, without creating anything (for reading sources). */
  private checkParents(rel: string): void {
    const parent = parentOf(rel);
    if (this.goodDirs.has(parent)) return;
    let cur = '';
    for (const part of parent.split('/')) {
      cur = cur ? `${cur}/${part}` : part;
      if (this.goodDirs.has(cur)) continue;
      const st = fs.lstatSync(this.abs(cur));
      if (!st.isDirectory()) throw new RefusedPath(`refused: ${displayPath(cur)} is not a plain directory`);
      this.goodDirs.add(cur);
    }
  }

  private stagingFor(rel: string): string {
    const parent = parentOf(rel);
    try {
      this.ensureDir(parent);
      return parent;
    } catch {
      // The parent is (still) a file or symlink that this plan may replace with a directory: stage at the root.
      // The final rename checks the parents again, after the plan's removals.
      if (!this.stagingDir) {
        this.stagingDir = `.skysync-staging-${randomBytes(6).toString('hex')}`;
        fs.mkdirSync(this.abs(this.stagingDir), { mode: 0o700 });
        this.goodDirs.add(this.stagingDir);
      }
      return this.stagingDir;
    }
  }

  /** One random prefix per sync and a counter: unique enough with O_EXCL, and cheaper than random bytes per file. */
  private readonly tempPrefix = `.skysync-${randomBytes(6).toString('hex')}-`;
  private tempCount = 0;

  private tempName(dir: string): string {
    const name = `${this.tempPrefix}${(this.tempCount++).toString(36)}.tmp`;
    return dir ? `${dir}/${name}` : name;
  }

  /**
   * Builds files in plan order. A small file that comes whole from the stream joins the pending batch; while its
   * bytes are already buffered (the usual case) that takes no await at all.
   */
  private async buildMany(list: Staged[]): Promise<void> {
    for (const s of list) {
      const e = s.entry as FileEntry;
      const claim = this.writer && e.size <= SMALL_FILE ? this.claimFromStream(e) : null;
      if (!claim) {
        // A file built the other way may need chunks that the pending batch carries: send it on its way.
        await this.flush();
        await this.buildFile(s);
        continue;
      }
      let bytes = e.size === 0 ? NO_BYTES : this.stream.takeReady(e.size);
      if (!bytes) {
        try {
          bytes = await this.stream.take(e.size);
        } catch (err) {
          s.error = (err as Error).message;
          continue;
        }
      }
      this.bytesFromStream += e.size;
      if (this.pending && this.pending.bytes + e.size > BATCH_BYTES) await this.flush();
      this.addToBatch(s, e, claim.refs, claim.keys, bytes);
      if (this.pending!.files.length >= BATCH_FILES) await this.flush();
    }
  }

  private async buildFile(s: Staged): Promise<void> {
    const e = s.entry as FileEntry;
    const { pieces, packed, error } = this.pieces(e);
    let problem = error;
    if (!problem) {
      const total = pieces.reduce((a, p) => a + p.len, 0);
      if (total !== e.size) problem = `recipe adds up to ${total} bytes, entry says ${e.size}`;
      else if (!this.opts.chunker.recipeDigest(packed).equals(e.digest)) problem = 'recipe does not match its digest';
    }
    if (problem) {
      s.error = problem;
      for (const p of pieces) if (p.from === 'stream') await this.stream.take(p.len);
      return;
    }
    // Small files that come whole from the stream: take their bytes in order now, write them in parallel.
    if (e.size <= 256 * 1024 && pieces.every((p) => p.from === 'stream')) {
      let bytes: Buffer;
      try {
        bytes = e.size === 0 ? Buffer.alloc(0) : await this.stream.take(e.size);
        this.bytesFromStream += e.size;
      } catch (err) {
        s.error = (err as Error).message;
        return;
      }
      const file = Promise.resolve(this.writeSmall(s, e, pieces, bytes));
      let off = 0;
      for (const p of pieces) {
        this.remember(p.id.toString('latin1'), { file, offset: off, len: p.len });
        off += p.len;
      }
      return;
    }
    await this.writeLarge(s, e, pieces);
  }

  /**
   * When every chunk of a file is taken from the stream (none held here, none claimed by an earlier file or
   * twice in this one) and the lengths add up, claims them: their packed refs and their keys. Otherwise null and
   * nothing claimed, and the general path builds (or refuses) the file.
   */
  private claimFromStream(e: FileEntry): { refs: Buffer[]; keys: string[] } | null {
    const refs: Buffer[] = [];
    let total = 0;
    for (const op of e.ops) {
      if (op.op !== 'chunks') return null;
      refs.push(op.chunks);
      for (let o = 32; o < op.chunks.length; o += CHUNK_REF_SIZE) total += op.chunks.readUInt32LE(o);
    }
    if (total !== e.size) return null;
    const keys: string[] = [];
    for (const c of refs) {
      for (let o = 0; o < c.length; o += CHUNK_REF_SIZE) {
        const key = c.toString('latin1', o, o + 32);
        const where = this.resolved?.get(key);
        if ((where !== undefined && where !== 'stream') || this.claimed.has(key)) {
          for (const k of keys) this.claimed.delete(k);
          return null;
        }
        this.claimed.add(key);
        keys.push(key);
      }
    }
    return { refs, keys };
  }

  /**
   * Queues a small file, whose bytes were just taken from the stream (in plan order), for the native writer: it
   * creates missing directories (never through a symlink), checks the file's digest and chunks, writes it into a
   * temp file in its directory and sets its mode and mtime. Its chunks are available to later files once its
   * batch is written.
   */
  private addToBatch(s: Staged, e: FileEntry, refs: Buffer[], keys: string[], bytes: Buffer): void {
    const temp = this.tempName(parentOf(e.path));
    const b = (this.pending ??= this.newBatch());
    bytes.copy(b.data, b.bytes);
    const rec = b.files.length * RECORD;
    b.layout.writeUInt32LE(e.size, rec);
    b.layout.writeUInt32LE(keys.length, rec + 4);
    b.layout.writeUInt32LE(e.mode, rec + 8);
    b.layout.writeUInt32LE(e.mtimeNsec, rec + 12);
    b.layout.writeBigInt64LE(BigInt(e.mtimeSec), rec + 16);
    e.digest.copy(b.layout, rec + 24, 0, 32);
    b.files.push(s);
    b.temps.push(temp);
    b.refs.push(...refs);
    b.bytes += e.size;
    s.temp = temp;
    let file: Promise<string | null> | null = null;
    let off = 0;
    for (let i = 0, k = 0; i < refs.length; i++) {
      for (let o = 32; o < refs[i]!.length; o += CHUNK_REF_SIZE, k++) {
        const key = keys[k]!;
        if (!this.repeated || this.repeated.has(key) || this.opts.onChunk) {
          file ??= b.written.then(() => (s.error ? null : s.temp));
          this.remember(key, { file, offset: off, len: refs[i]!.readUInt32LE(o) });
        }
        off += refs[i]!.readUInt32LE(o);
      }
    }
  }

  /** Hands the pending batch to the writer, after waiting for room among the batches in flight. */
  private async flush(): Promise<void> {
    const b = this.pending;
    if (!b) return;
    this.pending = null;
    while (this.inFlight.size >= BATCHES_IN_FLIGHT) await Promise.race(this.inFlight);
    const p: Promise<void> = this.writeBatch(b).finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  private newBatch(): Batch {
    const bufs = this.spare.pop() ?? { data: Buffer.allocUnsafe(BATCH_BYTES), layout: Buffer.allocUnsafe(BATCH_FILES * RECORD) };
    let settle!: () => void;
    const written = new Promise<void>((resolve) => (settle = resolve));
    return { files: [], temps: [], refs: [], ...bufs, bytes: 0, written, settle };
  }

  /** Never rejects: each file gets its stat or its error. */
  private async writeBatch(b: Batch): Promise<void> {
    const n = b.files.length;
    try {
      if (this.aborted) throw new Error('the sync was aborted');
      const out = await this.writer!.writeFiles(this.opts.root, b.temps.join('\0'), b.layout.subarray(0, n * RECORD), b.data.subarray(0, b.bytes), Buffer.concat(b.refs), true);
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
        const size = b.layout.readUInt32LE(i * RECORD);
        if (retry.has(i)) this.writeAlone(s, b.data.subarray(at, at + size));
        else if (!s.error) {
          const o = i * 24;
          s.stat = { size: Number(out.stats.readBigUInt64LE(o + 8)), mtimeNs: out.stats.readBigInt64LE(o + 16).toString(), ino: out.stats.readBigUInt64LE(o).toString() };
          // The writer opened (or made) every directory on the way as a plain one.
          for (let d = parentOf(s.entry.path); !this.goodDirs.has(d); d = parentOf(d)) this.goodDirs.add(d);
        }
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
      for (let o = 0; o < op.chunks.length; o += CHUNK_REF_SIZE) {
        pieces.push({ from: 'stream', id: op.chunks.subarray(o, o + 32), len: op.chunks.readUInt32LE(o + 32) });
      }
    }
    this.writeSmall(s, e, pieces, bytes);
  }

  /**
   * Writes a small file whole, synchronously: five syscalls beat five thread-pool round trips. Used where the
   * native batch writer is not available.
   */
  private writeSmall(s: Staged, e: FileEntry, pieces: Piece[], bytes: Buffer): string | null {
    let fd: number | null = null;
    try {
      let off = 0;
      for (const p of pieces) {
        if (!this.opts.chunker.blake3(bytes.subarray(off, off + p.len)).equals(p.id)) {
          throw new Error('received chunk does not match its id');
        }
        off += p.len;
      }
      const temp = this.tempName(this.stagingFor(e.path));
      fd = fs.openSync(this.abs(temp), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
      s.temp = temp;
      if (bytes.length) fs.writeSync(fd, bytes, 0, bytes.length, 0);
      s.stat = this.finishTemp(fd, e);
      return temp;
    } catch (err) {
      s.error = (err as Error).message;
      return s.temp;
    } finally {
      if (fd !== null) fs.closeSync(fd);
    }
  }

  /**
   * Sets mode and mtime on a file that already holds the entry's bytes. The open does not follow a symlink, and
   * the file must still be the one recorded (inode, size, mtime), or a job's change would get the new metadata.
   */
  private retouch(e: FileEntry, cur: PlacedRecord): StatKey {
    this.checkParents(e.path);
    const fd = fs.openSync(this.abs(e.path), O_RDONLY | O_NOFOLLOW);
    try {
      const st = fs.fstatSync(fd, { bigint: true });
      if (!st.isFile() || st.ino.toString() !== cur.stat.ino || Number(st.size) !== cur.stat.size || st.mtimeNs.toString() !== cur.stat.mtimeNs) {
        throw new Error(`${displayPath(e.path)} changed on this side during the sync; push again`);
      }
      return this.finishTemp(fd, e);
    } finally {
      fs.closeSync(fd);
    }
  }

  private finishTemp(fd: number, e: FileEntry): StatKey {
    fs.fchmodSync(fd, e.mode);
    const t = e.mtimeSec + e.mtimeNsec / 1e9;
    fs.futimesSync(fd, t, t);
    const st = fs.fstatSync(fd, { bigint: true });
    return { size: Number(st.size), mtimeNs: st.mtimeNs.toString(), ino: st.ino.toString() };
  }

  /**
   * Builds a file piece by piece. Runs of chunks are read (from the stream or from a held file) and written in
   * blocks of up to 8 MiB, each chunk verified against its id. Reading the next block and writing the previous
   * one (both in the thread pool) overlap with verifying the current one. A failure keeps consuming the stream so
   * the receiver stays in step with the sender.
   */
  private async writeLarge(s: Staged, e: FileEntry, pieces: Piece[]): Promise<void> {
    const BLOCK = 8 * 1024 * 1024;
    let fd: number | null = null;
    const sources = new Map<string, number>();
    let failed: string | null = null;
    let off = 0;
    try {
      const temp = this.tempName(this.stagingFor(e.path));
      fd = fs.openSync(this.abs(temp), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
      s.temp = temp;
    } catch (err) {
      failed = (err as Error).message;
    }
    const chunker = this.opts.chunker;
    let written: Promise<string | null> | null = null;
    const register = (from: number, to: number, at: number): void => {
      written ??= Promise.resolve(s.temp);
      for (let k = from; k <= to; k++) {
        const q = pieces[k]!;
        this.remember(q.id.toString('latin1'), { file: written, offset: at, len: q.len });
        at += q.len;
      }
    };
    // The longest runs of pieces of the same kind (and, for held files, contiguous in the same file).
    const runs: Array<{ i: number; j: number; len: number }> = [];
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i]!;
      let j = i;
      let runLen = p.len;
      while (j + 1 < pieces.length && runLen < BLOCK) {
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
    let writing: Promise<void> = Promise.resolve();
    // Buffers read from disk go back to the pool once written (or dropped); stream buffers are the stream's.
    const pooled = new Set<Buffer>();
    const readAt = (h: number, len: number, at: number): Promise<Buffer> =>
      new Promise((resolve, reject) => {
        const buf = takeReadBuffer(len).subarray(0, len);
        fs.read(h, buf, 0, len, at, (err, n) => {
          if (err || n !== len) {
            giveReadBuffer(buf);
            reject(err ?? new Error('short read'));
          } else {
            pooled.add(buf);
            resolve(buf);
          }
        });
      });
    const recycle = (buf: Buffer | null): void => {
      if (buf && pooled.delete(buf)) giveReadBuffer(buf);
    };
    const fetch = async (run: { i: number; len: number }): Promise<Buffer | null> => {
      const p = pieces[run.i]!;
      if (p.from === 'stream') {
        const buf = await this.stream.take(run.len);
        this.bytesFromStream += run.len;
        return buf;
      }
      if (failed) return null;
      if (p.from === 'disk') {
        let src = sources.get(p.path);
        if (src === undefined) {
          this.checkParents(p.path);
          src = fs.openSync(this.abs(p.path), O_RDONLY | O_NOFOLLOW);
          sources.set(p.path, src);
        }
        const buf = await readAt(src, run.len, p.offset).catch(() => {
          throw new Error(`source ${displayPath(p.path)} is shorter than recorded`);
        });
        this.bytesFromDisk += run.len;
        return buf;
      }
      const sc = this.session.get(p.id.toString('latin1'));
      const file = sc ? await sc.file : null;
      if (!sc || !file) throw new Error('chunk expected from earlier in this sync is missing');
      const h = fs.openSync(this.abs(file), O_RDONLY | O_NOFOLLOW);
      try {
        return await readAt(h, p.len, sc.offset);
      } finally {
        fs.closeSync(h);
      }
    };
    const quiet = <T,>(pr: Promise<T>): Promise<T> => {
      pr.catch(() => {});
      return pr;
    };
    // A run that repeats a chunk written earlier (perhaps earlier in this file) is read only once the writes
    // before it have landed; other runs are read one ahead.
    const prefetchable = (r: number): boolean => r < runs.length && pieces[runs[r]!.i]!.from !== 'session';
    let next: Promise<Buffer | null> | null = prefetchable(0) ? quiet(fetch(runs[0]!)) : null;
    for (let r = 0; r < runs.length; r++) {
      const run = runs[r]!;
      const p = pieces[run.i]!;
      let buf: Buffer | null = null;
      let fetchError: unknown = null;
      try {
        if (next === null) {
          await writing.catch(() => {});
          next = quiet(fetch(run));
        }
        buf = await next;
      } catch (err) {
        fetchError = err;
      }
      // Stream data must be taken in order, whatever happens to this run (the rest only while still useful).
      next = prefetchable(r + 1) ? quiet(fetch(runs[r + 1]!)) : null;
      try {
        if (fetchError) throw fetchError;
        if (failed || !buf) {
          recycle(buf);
          continue;
        }
        const refs = Buffer.allocUnsafe((run.j - run.i + 1) * 36);
        for (let k = run.i, r = 0; k <= run.j; k++, r += 36) {
          pieces[k]!.id.copy(refs, r);
          refs.writeUInt32LE(pieces[k]!.len, r + 32);
        }
        // Hashed off this thread (native): frames keep arriving and the previous block keeps being written.
        const bad = await chunker.verifyChunks(buf, refs);
        if (bad >= 0) {
          const q = pieces[run.i + bad]!;
          throw new Error(
            q.from === 'disk'
              ? `chunk from ${displayPath((q as { path: string }).path)} does not match its id (changed on this side?)`
              : q.from === 'stream'
                ? 'received chunk does not match its id'
                : 'session chunk does not match its id',
          );
        }
        await writing;
        const at = off;
        off += buf.length;
        writing = quiet(
          new Promise<void>((resolve, reject) =>
            fs.write(fd!, buf, 0, buf.length, at, (err) => {
              recycle(buf);
              if (err) return reject(err);
              register(run.i, run.j, at);
              resolve();
            }),
          ),
        );
      } catch (err) {
        failed ??= (err as Error).message;
        if (p.from === 'stream' && this.stream.size === 0 && /ended early/.test((err as Error).message)) {
          s.error = failed;
          break;
        }
      }
    }
    try {
      await writing;
    } catch (err) {
      failed ??= (err as Error).message;
    }
    for (const h of sources.values()) fs.closeSync(h);
    try {
      if (!failed && fd !== null) s.stat = this.finishTemp(fd, e);
    } catch (err) {
      failed = (err as Error).message;
    }
    if (fd !== null) fs.closeSync(fd);
    if (failed) s.error = failed;
  }

  private statKey(rel: string): StatKey {
    const st = fs.lstatSync(this.abs(rel), { bigint: true });
    return { size: Number(st.size), mtimeNs: st.mtimeNs.toString(), ino: st.ino.toString() };
  }

  private forgetDirs(rel: string): void {
    for (const d of this.goodDirs) if (d === rel || d.startsWith(rel + '/')) this.goodDirs.delete(d);
  }

  /** Removes one path the plan no longer has. Directories only when empty: what jobs wrote stays. */
  private remove(rel: string): 'removed' | 'kept' | 'absent' {
    try {
      this.checkParents(rel);
    } catch {
      throw new RefusedPath(`refused: a parent of ${displayPath(rel)} is a symlink`);
    }
    const st = fs.lstatSync(this.abs(rel), { throwIfNoEntry: false });
    if (!st) return 'absent';
    if (st.isDirectory()) {
      try {
        fs.rmdirSync(this.abs(rel));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOTEMPTY' || code === 'EEXIST') return 'kept';
        throw e;
      }
      this.forgetDirs(rel);
    } else {
      fs.unlinkSync(this.abs(rel));
    }
    return 'removed';
  }

  /** Renames a staged file or link (relative to the root) into place; a directory in the way goes only when it is
   * empty. */
  private place(temp: string, rel: string, size = 0): void {
    // Worth it only where a rename would wait: over a large file.
    if (this.opts.replaceFile && size >= REPLACE_NATIVE_FROM) {
      try {
        this.opts.replaceFile(this.abs(temp), this.abs(rel));
        return;
      } catch {
        // Whatever stands there now, the plain rename below says how to handle it.
      }
    }
    try {
      fs.renameSync(this.abs(temp), this.abs(rel));
    } catch (e) {
      if (!inTheWay((e as NodeJS.ErrnoException).code)) throw e;
      this.clearForFile(rel);
      fs.renameSync(this.abs(temp), this.abs(rel));
    }
  }

  /**
   * Renames staged files into place off this thread. Only plain renames of distinct files whose parents were
   * checked go here: none depends on another, nor on anything else the transition does once its parent exists.
   * A rename that meets a directory, or fails, is retried here the usual way.
   */
  private async renameBatch(batch: Staged[], result: ReceiveResult): Promise<void> {
    let failures: Array<{ index: number; errno?: number | null; message: string }>;
    try {
      failures = await this.writer!.renameFiles(
        this.opts.root,
        batch.map((s) => s.temp!).join('\0'),
        batch.map((s) => s.entry.path).join('\0'),
      );
    } catch (err) {
      failures = batch.map((_, index) => ({ index, message: (err as Error).message }));
    }
    const failed = new Set<number>();
    for (const f of failures) {
      const s = batch[f.index]!;
      const rel = s.entry.path;
      try {
        if (f.errno == null || !inTheWay(errnoNames.get(f.errno))) throw new Error(f.message);
        this.place(s.temp!, rel);
      } catch (err) {
        failed.add(f.index);
        result.placed.delete(rel);
        result.written--;
        result.failed.push({ path: rel, error: (err as Error).message });
      }
    }
    batch.forEach((s, i) => {
      if (!failed.has(i)) s.temp = null;
    });
  }

  /** Waits for staging, then makes the plan true on disk. */
  async transition(): Promise<ReceiveResult> {
    await this.staged_();
    trace('every file staged');
    const result: ReceiveResult = { placed: new Map(this.unchanged), removed: [], forgotten: [], kept: [], failed: [], written: 0 };
    const { deleteMode, isPlaced, untrusted } = this.opts;
    // 1. Removals, deepest first.
    const deletes = this.staged.filter((s) => s.entry.kind === 'delete').sort((a, b) => (a.entry.path < b.entry.path ? 1 : -1));
    for (const s of deletes) {
      const e = s.entry as { path: string; forgetOnly: boolean };
      if (e.forgetOnly || deleteMode === 'none') {
        result.forgotten.push(e.path);
        continue;
      }
      if (!isPlaced(e.path) || untrusted.has(e.path)) {
        // Not ours (or changed by a job since): never delete it.
        if (isPlaced(e.path)) result.kept.push(e.path);
        result.forgotten.push(e.path);
        continue;
      }
      try {
        if (this.remove(e.path) === 'kept') result.kept.push(e.path);
        result.removed.push(e.path);
      } catch (err) {
        result.failed.push({ path: e.path, error: (err as Error).message });
      }
    }
    // 2. Directories and 3. files and symlinks, parents first. Files renamed in batches (native) are placed in
    // the result now and taken out again if their rename fails.
    const placing = this.staged.filter((s) => s.entry.kind !== 'delete').sort((a, b) => (a.entry.path < b.entry.path ? -1 : 1));
    const dirModes: Array<{ path: string; mode: number }> = [];
    let renames: Staged[] = [];
    let renaming = new Set<string>();
    const renamed: Array<Promise<void>> = [];
    const sendRenames = (): void => {
      if (renames.length) renamed.push(this.renameBatch(renames, result));
      renames = [];
      renaming = new Set();
    };
    for (const s of placing) {
      const e = s.entry;
      try {
        if (s.error) throw new Error(s.error);
        if (e.kind === 'dir') {
          // A directory this sync made or checked (and did not remove since) needs no second look.
          if (!this.goodDirs.has(e.path)) this.replaceNonDir(e.path);
          this.ensureDir(e.path);
          const st = fs.lstatSync(this.abs(e.path), { bigint: true });
          // Most directories have their mode already; the others get it last (4.).
          if ((Number(st.mode) & 0o7777) !== e.mode) dirModes.push({ path: e.path, mode: e.mode });
          result.placed.set(e.path, {
            kind: 'dir',
            mode: e.mode,
            size: 0,
            mtimeSec: 0,
            mtimeNsec: 0,
            stat: { size: Number(st.size), mtimeNs: st.mtimeNs.toString(), ino: st.ino.toString() },
          });
        } else if (e.kind === 'file' && s.retouch) {
          result.placed.set(e.path, this.fileRecord(e, this.retouch(e, s.retouch)));
          result.written++;
        } else if (e.kind === 'file') {
          if (!s.temp) throw new Error('file was not staged');
          this.ensureDir(parentOf(e.path));
          if (this.writer && s.stat && e.size < REPLACE_NATIVE_FROM) {
            // The same path twice in a plan: the later entry must win, as it would one by one.
            if (renaming.has(e.path)) {
              sendRenames();
              await Promise.all(renamed);
            }
            renames.push(s);
            renaming.add(e.path);
            if (renames.length >= RENAME_BATCH) sendRenames();
          } else {
            this.place(s.temp, e.path, e.size);
            s.temp = null;
          }
          result.placed.set(e.path, this.fileRecord(e, s.stat ?? this.statKey(e.path)));
          result.written++;
        } else if (e.kind === 'symlink') {
          const parent = parentOf(e.path);
          this.ensureDir(parent);
          const temp = this.tempName(parent);
          fs.symlinkSync(Buffer.from(e.target, 'latin1'), this.abs(temp));
          try {
            this.place(temp, e.path);
          } catch (err) {
            fs.rmSync(this.abs(temp), { force: true });
            throw err;
          }
          result.placed.set(e.path, { kind: 'symlink', mode: 0o777, size: 0, mtimeSec: 0, mtimeNsec: 0, target: e.target, stat: this.statKey(e.path) });
          result.written++;
        }
      } catch (err) {
        result.failed.push({ path: e.path, error: (err as Error).message });
      }
    }
    sendRenames();
    await Promise.all(renamed);
    // 4. Directory modes last, deepest first, so a read-only directory does not block its own children.
    for (const d of dirModes.reverse()) {
      try {
        fs.chmodSync(this.abs(d.path), d.mode);
      } catch (err) {
        result.failed.push({ path: d.path, error: (err as Error).message });
      }
    }
    await this.cleanup();
    return result;
  }

  private fileRecord(e: FileEntry, stat: StatKey): PlacedRecord {
    return { kind: 'file', mode: e.mode, size: e.size, mtimeSec: e.mtimeSec, mtimeNsec: e.mtimeNsec, chunks: this.packedOf(e), digest: e.digest, stat };
  }

  private packedOf(e: FileEntry): Buffer {
    const only = e.ops.length === 1 ? e.ops[0]! : null;
    if (only?.op === 'chunks') return only.chunks;
    const refs: Buffer[] = [];
    for (const op of e.ops) {
      if (op.op === 'chunks') refs.push(op.chunks);
      else {
        const r = this.opts.held.recipeOf(op.from ?? e.path)!;
        refs.push(r.subarray(op.start * CHUNK_REF_SIZE, (op.start + op.count) * CHUNK_REF_SIZE));
      }
    }
    return Buffer.concat(refs);
  }

  /** A directory entry where a file or symlink stands: the old entry goes. */
  private replaceNonDir(rel: string): void {
    this.ensureDir(parentOf(rel));
    const st = fs.lstatSync(this.abs(rel), { throwIfNoEntry: false });
    if (st && !st.isDirectory()) fs.unlinkSync(this.abs(rel));
  }

  /** A file or symlink where a directory stands: only an empty directory may go. */
  private clearForFile(rel: string): void {
    const st = fs.lstatSync(this.abs(rel), { throwIfNoEntry: false });
    if (!st?.isDirectory()) return;
    try {
      fs.rmdirSync(this.abs(rel));
    } catch {
      throw new Error(`cannot replace directory ${displayPath(rel)}: it holds files skysync did not place; move them away and retry`);
    }
    this.forgetDirs(rel);
  }

  /** Gives up before the transition: unblocks the builder, waits for it, removes every temp file. */
  async abort(why: Error): Promise<void> {
    this.aborted = true;
    this.stream.fail(why);
    await this.staged_().catch(() => {});
    await this.cleanup();
  }

  /** Removes temp files of anything that failed, and the staging directory. */
  async cleanup(): Promise<void> {
    for (const s of this.staged) {
      if (s.temp) {
        await fsp.unlink(this.abs(s.temp)).catch(() => {});
        s.temp = null;
      }
    }
    if (this.stagingDir) {
      await fsp.rm(this.abs(this.stagingDir), { recursive: true, force: true }).catch(() => {});
      this.stagingDir = null;
    }
  }
}

/** A rename that failed on one of these may succeed once an empty directory in the way is removed. */
function inTheWay(code: string | undefined): boolean {
  return code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR';
}
