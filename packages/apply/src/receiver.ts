// The receiving side of a sync (the agent on push, the client on pull): stage, then transition.
//
// Stage: every new or changed file is built in a temp file from chunks already held (anywhere under the root,
// each verified against its id as it is read) and chunks from the data stream (verified too); the recipe's
// digest is checked before anything is written; mode and mtime are set on the temp file.
// Transition: removals first (deepest first), then directories, then renames into place, then directory modes.
// Old content is never touched until every temp file is built, so renames and copies can use it.
//
// Safety: every path is relative and checked; no parent component may be a symlink; temp files are created
// with O_EXCL|O_NOFOLLOW; nothing is written outside the root.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type { Chunker } from '@skysync/chunking';
import {
  CHUNK_REF_SIZE,
  type DeleteMode,
  type FileEntry,
  type FileFailure,
  type PlanEntry,
  displayPath,
  parentOf,
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
  temp: Buffer | null;
  error: string | null;
  /** fstat of the finished temp file: inode, size and mtime survive the rename. */
  stat?: StatKey;
  /** The file in place already has the entry's bytes: only its mode and mtime change. */
  retouch?: PlacedRecord;
}

/** Where a chunk received earlier in this sync sits; settles once its bytes are on disk (small files are
 * written in parallel), or to null when that write failed. */
type SessionChunk = Promise<{ file: Buffer; offset: number } | null>;

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
  private queue: Promise<void> = Promise.resolve();
  private writesInFlight = new Set<Promise<void>>();
  bytesFromStream = 0;
  bytesFromDisk = 0;

  constructor(private readonly opts: ReceiverOptions) {
    this.rootBuf = Buffer.from(opts.root, 'utf8');
  }

  private abs(rel: string): Buffer {
    return rel === '' ? this.rootBuf : Buffer.concat([this.rootBuf, Buffer.from('/' + rel, 'latin1')]);
  }

  /**
   * Data mode: files are built as their entries arrive, taking literal chunks from the stream in order.
   * Need mode: call `resolveNeeds` after the whole plan arrived, then `buildAll`.
   */
  add(entries: PlanEntry[], buildNow: boolean): void {
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
      if (buildNow && e.kind === 'file') this.queue = this.queue.then(() => this.buildFile(s));
    }
  }

  /** Need mode: which chunk ids must come over the wire, in the order the builder will take them. */
  resolveNeeds(): Buffer[] {
    const resolved = new Map<string, { path: string; offset: number } | 'stream'>();
    const ids: Buffer[] = [];
    for (const s of this.staged) {
      if (s.entry.kind !== 'file') continue;
      for (const op of s.entry.ops) {
        if (op.op !== 'chunks') continue;
        for (let o = 0; o < op.chunks.length; o += CHUNK_REF_SIZE) {
          const id = op.chunks.subarray(o, o + 32);
          const key = id.toString('hex');
          if (!resolved.has(key)) {
            resolved.set(key, 'stream');
            ids.push(id);
          }
        }
      }
    }
    const found = this.opts.held.locate(ids);
    const needed: Buffer[] = [];
    ids.forEach((id, i) => {
      const loc = found[i];
      if (loc && !this.opts.untrusted.has(loc.path)) resolved.set(id.toString('hex'), loc);
      else needed.push(id);
    });
    this.resolved = resolved;
    return needed;
  }

  buildAll(): void {
    for (const s of this.staged) {
      if (s.entry.kind === 'file' && !s.retouch) this.queue = this.queue.then(() => this.buildFile(s));
    }
  }

  /** Waits for every file to be staged (the data stream must be ended by then). */
  async staged_(): Promise<void> {
    await this.queue;
    await Promise.all(this.writesInFlight);
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
          const key = id.toString('hex');
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
      const temp = this.writeSmall(s, e, pieces, bytes);
      let off = 0;
      for (const p of pieces) {
        this.session.set(p.id.toString('hex'), Promise.resolve(temp ? { file: temp, offset: off } : null));
        off += p.len;
      }
      return;
    }
    await this.writeLarge(s, e, pieces);
  }

  /** Writes a small file whole, synchronously: five syscalls beat five thread-pool round trips. */
  private writeSmall(s: Staged, e: FileEntry, pieces: Piece[], bytes: Buffer): Buffer | null {
    let fd: number | null = null;
    try {
      let off = 0;
      for (const p of pieces) {
        if (!this.opts.chunker.blake3(bytes.subarray(off, off + p.len)).equals(p.id)) {
          throw new Error('received chunk does not match its id');
        }
        off += p.len;
      }
      const temp = this.abs(this.tempName(this.stagingFor(e.path)));
      fd = fs.openSync(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
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
      const temp = this.abs(this.tempName(this.stagingFor(e.path)));
      fd = fs.openSync(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
      s.temp = temp;
    } catch (err) {
      failed = (err as Error).message;
    }
    const chunker = this.opts.chunker;
    const register = (from: number, to: number, at: number): void => {
      for (let k = from; k <= to; k++) {
        const q = pieces[k]!;
        this.session.set(q.id.toString('hex'), Promise.resolve({ file: s.temp!, offset: at }));
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
    const readAt = (h: number, len: number, at: number): Promise<Buffer> =>
      new Promise((resolve, reject) => {
        const buf = Buffer.allocUnsafe(len);
        fs.read(h, buf, 0, len, at, (err, n) => (err ? reject(err) : n !== len ? reject(new Error('short read')) : resolve(buf)));
      });
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
      const sc = await this.session.get(p.id.toString('hex'));
      if (!sc) throw new Error('chunk expected from earlier in this sync is missing');
      const h = fs.openSync(sc.file, O_RDONLY | O_NOFOLLOW);
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
        if (failed || !buf) continue;
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

  /** Renames a staged file or link into place; a directory in the way goes only when it is empty. */
  private place(temp: Buffer, rel: string, size = 0): void {
    // Worth it only where a rename would wait: over a large file.
    if (this.opts.replaceFile && size >= REPLACE_NATIVE_FROM) {
      try {
        this.opts.replaceFile(temp, this.abs(rel));
        return;
      } catch {
        // Whatever stands there now, the plain rename below says how to handle it.
      }
    }
    try {
      fs.renameSync(temp, this.abs(rel));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EISDIR' && code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOTDIR') throw e;
      this.clearForFile(rel);
      fs.renameSync(temp, this.abs(rel));
    }
  }

  /** Waits for staging, then makes the plan true on disk. */
  async transition(): Promise<ReceiveResult> {
    await this.staged_();
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
    // 2. Directories and 3. files and symlinks, parents first.
    const placing = this.staged.filter((s) => s.entry.kind !== 'delete').sort((a, b) => (a.entry.path < b.entry.path ? -1 : 1));
    const dirModes: Array<{ path: string; mode: number }> = [];
    for (const s of placing) {
      const e = s.entry;
      try {
        if (s.error) throw new Error(s.error);
        if (e.kind === 'dir') {
          this.replaceNonDir(e.path);
          this.ensureDir(e.path);
          dirModes.push({ path: e.path, mode: e.mode });
          result.placed.set(e.path, { kind: 'dir', mode: e.mode, size: 0, mtimeSec: 0, mtimeNsec: 0, stat: this.statKey(e.path) });
        } else if (e.kind === 'file' && s.retouch) {
          result.placed.set(e.path, {
            kind: 'file',
            mode: e.mode,
            size: e.size,
            mtimeSec: e.mtimeSec,
            mtimeNsec: e.mtimeNsec,
            chunks: this.packedOf(e),
            digest: e.digest,
            stat: this.retouch(e, s.retouch),
          });
          result.written++;
        } else if (e.kind === 'file') {
          if (!s.temp) throw new Error('file was not staged');
          this.ensureDir(parentOf(e.path));
          this.place(s.temp, e.path, e.size);
          s.temp = null;
          result.placed.set(e.path, {
            kind: 'file',
            mode: e.mode,
            size: e.size,
            mtimeSec: e.mtimeSec,
            mtimeNsec: e.mtimeNsec,
            chunks: this.packedOf(e),
            digest: e.digest,
            stat: s.stat ?? this.statKey(e.path),
          });
          result.written++;
        } else if (e.kind === 'symlink') {
          const parent = parentOf(e.path);
          this.ensureDir(parent);
          const temp = this.abs(this.tempName(parent));
          fs.symlinkSync(Buffer.from(e.target, 'latin1'), temp);
          try {
            this.place(temp, e.path);
          } catch (err) {
            fs.rmSync(temp, { force: true });
            throw err;
          }
          result.placed.set(e.path, { kind: 'symlink', mode: 0o777, size: 0, mtimeSec: 0, mtimeNsec: 0, target: e.target, stat: this.statKey(e.path) });
          result.written++;
        }
      } catch (err) {
        result.failed.push({ path: e.path, error: (err as Error).message });
      }
    }
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

  private packedOf(e: FileEntry): Buffer {
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
    this.stream.fail(why);
    await this.staged_().catch(() => {});
    await this.cleanup();
  }

  /** Removes temp files of anything that failed, and the staging directory. */
  async cleanup(): Promise<void> {
    for (const s of this.staged) {
      if (s.temp) {
        await fsp.unlink(s.temp).catch(() => {});
        s.temp = null;
      }
    }
    if (this.stagingDir) {
      await fsp.rm(this.abs(this.stagingDir), { recursive: true, force: true }).catch(() => {});
      this.stagingDir = null;
    }
  }
}
