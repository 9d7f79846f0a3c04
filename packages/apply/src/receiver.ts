// The receiving side of a sync (the agent on push, the client on pull): stage, then transition.
//
// Stage: every new or changed file is built in a temp file from chunks already held (anywhere under the root,
// each verified against its id as it is read) and chunks from the data stream (verified too); the recipe's
// digest is checked before anything is written; mode and mtime are set on the temp file. Small files that come
// whole from the stream are written in batches by the native addon, in parallel off this thread
// (`small-files.ts`); the others piece by piece (`large-file.ts`).
// Transition (`transition.ts`): removals first (deepest first), then directories, then renames into place, then
// directory modes. Old content is never touched until every temp file is built, so renames and copies can use it.
//
// Safety: every path is relative and checked; every operation goes through the root guard (`root-guard.ts`),
// relative to directory handles opened without following symlinks; temp files are created with
// O_EXCL|O_NOFOLLOW and carry their owner in their name (`temp-names.ts`); nothing is written outside the root.

import { CHUNK_REF_SIZE, chunkRefCount, chunkRefId, chunkRefLen } from '@skysync/chunking';
import { type FileEntry, type PlanEntry, ProtocolError, displayPath, parentOf, trace } from '@skysync/protocol';
import { DataStream } from './data-stream.js';
import { LargeFileBuilder } from './large-file.js';
import { RootGuard } from './root-guard.js';
import { SMALL_FILE, SmallFileBatches, writeWhole } from './small-files.js';
import type { StageContext } from './stage-context.js';
import { stagingName, tempName } from './temp-names.js';
import { Transition } from './transition.js';
import type { PlacedRecord, Piece, ReceiveResult, ReceiverOptions, SessionChunk, Staged } from './types.js';

export type { HeldChunks, PlacedRecord, ReceiveResult, ReceiverOptions, SessionChunk, StatKey } from './types.js';
export { RefusedPath } from './root-guard.js';

const NO_BYTES = Buffer.alloc(0);

export class Receiver implements StageContext {
  readonly stream = new DataStream();
  readonly guard: RootGuard;
  readonly session = new Map<string, SessionChunk>();
  readonly bytes = { fromStream: 0, fromDisk: 0 };
  aborted = false;
  private readonly staged: Staged[] = [];
  /** Ids whose bytes the stream carries once, claimed by the first file (in plan order) that uses them. */
  private readonly claimed = new Set<string>();
  private readonly prefixCache = new Map<string, Float64Array>();
  private stagingDir: string | null = null;
  /** Entries that matched what is already in place. */
  private readonly unchanged = new Map<string, PlacedRecord>();
  /** Need mode: ids resolved before building (local location or "comes from the stream"). */
  private resolved: Map<string, { path: string; offset: number } | 'stream'> | null = null;
  /** Need mode: ids the plan takes more than once. Only their bytes are ever read back from this sync's files. */
  private repeated: Set<string> | null = null;
  /** Building, in plan order. Never rejects: a file that fails gets its error; what ends the whole sync (the
   * stream failing or ending early) is kept in `failure`. */
  private queue: Promise<void> = Promise.resolve();
  private failure: Error | null = null;
  private readonly batches: SmallFileBatches | null;

  constructor(readonly opts: ReceiverOptions) {
    this.guard = new RootGuard(opts.root);
    this.batches = opts.native ? new SmallFileBatches(this, opts.native, () => this.repeated) : null;
  }

  get bytesFromStream(): number {
    return this.bytes.fromStream;
  }

  get bytesFromDisk(): number {
    return this.bytes.fromDisk;
  }

  remember(key: string, sc: SessionChunk): void {
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
      // Nothing to make true here: the source could not read the path (the agent's --delete reads these).
      if (e.kind === 'keep') continue;
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
    if (build.length) this.enqueue(build);
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
        for (let i = 0, n = chunkRefCount(op.chunks); i < n; i++) {
          const id = chunkRefId(op.chunks, i);
          const key = id.toString('latin1');
          if (!resolved.has(key)) {
            resolved.set(key, 'stream');
            ids.push(id);
            lens.push(chunkRefLen(op.chunks, i));
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
    this.enqueue(build);
  }

  private enqueue(list: Staged[]): void {
    this.queue = this.queue.then(() =>
      this.buildMany(list).catch((err: Error) => {
        this.failure ??= err;
      }),
    );
  }

  /** Waits for every file to be staged (the data stream must be ended by then); throws what ended the sync. */
  private async stagedAll(): Promise<void> {
    await this.queue;
    await this.batches?.flush();
    await this.batches?.settled();
    // A file that took more than the sender sent: the plan lied about it (its digest, size or chunks), and every
    // file after it would be built from the wrong bytes.
    if (this.stream.shortBy) throw new ProtocolError(this.stream.shortBy.message);
    if (this.failure) throw this.failure;
  }

  private prefixSums(path: string, recipe: Buffer): Float64Array {
    let p = this.prefixCache.get(path);
    if (!p) {
      const n = chunkRefCount(recipe);
      p = new Float64Array(n + 1);
      for (let i = 0; i < n; i++) p[i + 1] = p[i]! + chunkRefLen(recipe, i);
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
        const n = chunkRefCount(recipe);
        if (op.start + op.count > n) {
          error ??= `copy op beyond the recipe of ${displayPath(from)}`;
          continue;
        }
        const sums = this.prefixSums(from, recipe);
        for (let i = op.start; i < op.start + op.count; i++) {
          refs.push(recipe.subarray(i * CHUNK_REF_SIZE, (i + 1) * CHUNK_REF_SIZE));
          pieces.push({ from: 'disk', path: from, offset: sums[i]!, id: chunkRefId(recipe, i), len: chunkRefLen(recipe, i) });
        }
      } else {
        for (let i = 0, n = chunkRefCount(op.chunks); i < n; i++) {
          refs.push(op.chunks.subarray(i * CHUNK_REF_SIZE, (i + 1) * CHUNK_REF_SIZE));
          const id = chunkRefId(op.chunks, i);
          const len = chunkRefLen(op.chunks, i);
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

  /** A new temp name for the file at `rel`: in its directory, or in the staging directory at the root when that
   * is (still) a file or symlink that this plan may replace with a directory. The final rename checks the parents
   * again, after the plan's removals. */
  tempFor(rel: string): string {
    const parent = parentOf(rel);
    try {
      this.guard.ensureDir(parent);
      return tempName(parent);
    } catch {
      if (!this.stagingDir) {
        const dir = stagingName();
        this.guard.mkdir(dir, 0o700);
        this.stagingDir = dir;
      }
      return tempName(this.stagingDir);
    }
  }

  /**
   * Builds files in plan order. A small file that comes whole from the stream joins the pending batch; while its
   * bytes are already buffered (the usual case) that takes no await at all.
   */
  private async buildMany(list: Staged[]): Promise<void> {
    for (const s of list) {
      const e = s.entry as FileEntry;
      const claim = this.batches && e.size <= SMALL_FILE ? this.claimFromStream(e) : null;
      if (!claim) {
        // A file built the other way may need chunks that the pending batch carries: send it on its way.
        await this.batches?.flush();
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
      this.bytes.fromStream += e.size;
      const batches = this.batches!;
      if (batches.wouldOverflow(e.size)) await batches.flush();
      batches.add(s, e, claim.refs, claim.keys, bytes);
      if (batches.full) await batches.flush();
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
      // Its stream bytes are skipped, to stay in step; a stream that ends first fails the sync.
      for (const p of pieces) if (p.from === 'stream') await this.stream.take(p.len);
      return;
    }
    // Small files that come whole from the stream: take their bytes in order now, write them in parallel.
    if (e.size <= SMALL_FILE && pieces.every((p) => p.from === 'stream')) {
      let bytes: Buffer;
      try {
        bytes = e.size === 0 ? NO_BYTES : await this.stream.take(e.size);
        this.bytes.fromStream += e.size;
      } catch (err) {
        s.error = (err as Error).message;
        return;
      }
      const file = Promise.resolve(writeWhole(this, s, e, pieces, bytes));
      let off = 0;
      for (const p of pieces) {
        this.remember(p.id.toString('latin1'), { file, offset: off, len: p.len });
        off += p.len;
      }
      return;
    }
    await new LargeFileBuilder(this, s, e, pieces).run();
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
      for (let i = 0, n = chunkRefCount(op.chunks); i < n; i++) total += chunkRefLen(op.chunks, i);
    }
    if (total !== e.size) return null;
    const keys: string[] = [];
    for (const c of refs) {
      for (let i = 0, n = chunkRefCount(c); i < n; i++) {
        const key = chunkRefId(c, i).toString('latin1');
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

  /** Waits for staging, then makes the plan true on disk. Staging that failed as a whole (the stream ended
   * early, the sync was aborted) throws, with every temp file removed. */
  async transition(): Promise<ReceiveResult> {
    try {
      await this.stagedAll();
      trace('every file staged');
      return await new Transition(this.opts, this.guard, this.opts.native ?? null, this.unchanged).run(this.staged);
    } finally {
      this.cleanup();
    }
  }

  /** Gives up before the transition: unblocks the builder, waits for it, removes every temp file. */
  async abort(why: Error): Promise<void> {
    this.aborted = true;
    this.stream.fail(why);
    await this.stagedAll().catch(() => {});
    this.cleanup();
  }

  /** Removes temp files of anything that failed, and the staging directory; closes the root guard's handles. */
  private cleanup(): void {
    // Temp files that are no longer where they were made: a job renamed their directory meanwhile (the native
    // writer finds directories by path, not by this sync's handles).
    const strays = new Set<string>();
    const remove = (rel: string): void => {
      try {
        this.guard.unlink(rel);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EACCES') strays.add(rel.slice(rel.lastIndexOf('/') + 1));
      }
    };
    for (const s of this.staged) {
      if (s.temp) remove(s.temp);
      s.temp = null;
    }
    if (this.stagingDir) {
      try {
        for (const t of this.guard.list(this.stagingDir)) remove(`${this.stagingDir}/${t.name}`);
        this.guard.rmdir(this.stagingDir);
      } catch {
        // A later sync sweeps it (its owner, this process, will be gone).
      }
      this.stagingDir = null;
    }
    if (strays.size) removeStrays(this.guard, strays);
    this.guard.close();
  }
}

/** Looks for temp files by name anywhere under the root (never through a symlink) and removes them. Names are
 * unique to this process, so nothing else can match. */
function removeStrays(guard: RootGuard, names: Set<string>): void {
  const pending = [''];
  while (pending.length && names.size) {
    const dir = pending.pop()!;
    let entries: Array<{ name: string; dir: boolean }>;
    try {
      entries = guard.list(dir);
    } catch {
      continue;
    }
    for (const d of entries) {
      const rel = dir ? `${dir}/${d.name}` : d.name;
      if (d.dir) pending.push(rel);
      else if (names.has(d.name)) {
        try {
          guard.unlink(rel);
          names.delete(d.name);
        } catch {
          // Moving still: a later sync sweeps it once this process is gone.
        }
      }
    }
  }
}
