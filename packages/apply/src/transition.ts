// The transition: once every file is staged, make the plan true on disk. Removals first (deepest first), then
// directories and files and symlinks (parents first), then directory modes (deepest first, so a read-only
// directory does not block its own children). Every operation goes through the root guard, by handle.

import fs from 'node:fs';
import os from 'node:os';
import { CHUNK_REF_SIZE } from '@skysync/chunking';
import { type FileEntry, displayPath, parentOf } from '@skysync/protocol';
import { RefusedPath, type RootGuard } from './root-guard.js';
import { tempName } from './temp-names.js';
import type { PlacedRecord, ReceiveResult, ReceiverOptions, Staged, StatKey, Writer } from './types.js';

/** Files from this size on are put in place by exchanging names (see `ReceiverOptions.replaceFile`). */
export const REPLACE_NATIVE_FROM = 1 << 20;
/** Renames handed to the native side at once. */
const RENAME_BATCH = 1024;

/** The errno names Node's fs errors carry as `code`, by number. */
const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

/** A rename that failed on one of these may succeed once an empty directory in the way is removed. */
function inTheWay(code: string | undefined): boolean {
  return code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR';
}

function statKeyOf(st: fs.BigIntStats): StatKey {
  return { size: Number(st.size), mtimeNs: st.mtimeNs.toString(), ino: st.ino.toString() };
}

export class Transition {
  private readonly result: ReceiveResult;
  private readonly dirModes: Array<{ path: string; mode: number }> = [];
  private renames: Staged[] = [];
  private renaming = new Set<string>();
  private readonly renamed: Array<Promise<void>> = [];

  constructor(
    private readonly opts: ReceiverOptions,
    private readonly guard: RootGuard,
    private readonly writer: Writer | null,
    unchanged: Map<string, PlacedRecord>,
  ) {
    this.result = { placed: new Map(unchanged), removed: [], forgotten: [], kept: [], failed: [], written: 0 };
  }

  async run(staged: Staged[]): Promise<ReceiveResult> {
    const deletes = staged.filter((s) => s.entry.kind === 'delete').sort((a, b) => (a.entry.path < b.entry.path ? 1 : -1));
    for (const s of deletes) this.removal(s.entry as { path: string; forgetOnly: boolean });
    // Files renamed in batches (native) are placed in the result now and taken out again if their rename fails.
    const placing = staged.filter((s) => s.entry.kind !== 'delete').sort((a, b) => (a.entry.path < b.entry.path ? -1 : 1));
    for (const s of placing) {
      try {
        if (s.error) throw new Error(s.error);
        await this.placeEntry(s);
      } catch (err) {
        this.result.failed.push({ path: s.entry.path, error: (err as Error).message });
      }
    }
    this.sendRenames();
    await Promise.all(this.renamed);
    for (const d of this.dirModes.reverse()) {
      try {
        this.guard.chmodDir(d.path, d.mode);
      } catch (err) {
        this.result.failed.push({ path: d.path, error: (err as Error).message });
      }
    }
    return this.result;
  }

  private removal(e: { path: string; forgetOnly: boolean }): void {
    const { deleteMode, isPlaced, untrusted } = this.opts;
    const r = this.result;
    if (e.forgetOnly || deleteMode === 'none') {
      r.forgotten.push(e.path);
      return;
    }
    if (!isPlaced(e.path) || untrusted.has(e.path)) {
      // Not ours (or changed by a job since): never delete it.
      if (isPlaced(e.path)) r.kept.push(e.path);
      r.forgotten.push(e.path);
      return;
    }
    try {
      if (this.remove(e.path) === 'kept') r.kept.push(e.path);
      r.removed.push(e.path);
    } catch (err) {
      r.failed.push({ path: e.path, error: (err as Error).message });
    }
  }

  /** Removes one path the plan no longer has. Directories only when empty: what jobs wrote stays. */
  private remove(rel: string): 'removed' | 'kept' | 'absent' {
    try {
      this.guard.checkParents(rel);
    } catch (e) {
      if (e instanceof RefusedPath) throw new RefusedPath(`refused: a parent of ${displayPath(rel)} is a symlink`);
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
      throw e;
    }
    const st = this.guard.lstat(rel);
    if (!st) return 'absent';
    if (st.isDirectory()) {
      try {
        this.guard.rmdir(rel);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOTEMPTY' || code === 'EEXIST') return 'kept';
        throw e;
      }
    } else {
      this.guard.unlink(rel);
    }
    return 'removed';
  }

  private async placeEntry(s: Staged): Promise<void> {
    const e = s.entry;
    const r = this.result;
    if (e.kind === 'dir') {
      this.placeDir(e.path, e.mode);
    } else if (e.kind === 'file' && s.retouch) {
      r.placed.set(e.path, this.fileRecord(e, retouch(this.guard, e, s.retouch)));
      r.written++;
    } else if (e.kind === 'file') {
      await this.placeFile(s, e);
    } else if (e.kind === 'symlink') {
      const parent = parentOf(e.path);
      this.guard.ensureDir(parent);
      const temp = tempName(parent);
      this.guard.symlink(Buffer.from(e.target, 'latin1'), temp);
      try {
        this.place(temp, e.path);
      } catch (err) {
        try {
          this.guard.unlink(temp);
        } catch {
          // Gone already, or its directory is: nothing left to remove here.
        }
        throw err;
      }
      r.placed.set(e.path, { kind: 'symlink', mode: 0o777, size: 0, mtimeSec: 0, mtimeNsec: 0, target: e.target, stat: statKeyOf(this.guard.lstatBig(e.path)) });
      r.written++;
    }
  }

  private placeDir(rel: string, mode: number): void {
    // A file or symlink where the directory goes: the old entry goes. A directory this sync opened (and did not
    // remove since) needs no second look.
    if (rel !== '' && !this.guard.isOpen(rel)) {
      this.guard.ensureDir(parentOf(rel));
      const st = this.guard.lstat(rel);
      if (st && !st.isDirectory()) this.guard.unlink(rel);
    }
    this.guard.ensureDir(rel);
    const st = fs.fstatSync(this.guard.dirFd(rel), { bigint: true });
    // Most directories have their mode already; the others get it last.
    if ((Number(st.mode) & 0o7777) !== mode) this.dirModes.push({ path: rel, mode });
    this.result.placed.set(rel, { kind: 'dir', mode, size: 0, mtimeSec: 0, mtimeNsec: 0, stat: statKeyOf(st) });
  }

  private async placeFile(s: Staged, e: FileEntry): Promise<void> {
    if (!s.temp) throw new Error('file was not staged');
    this.guard.ensureDir(parentOf(e.path));
    if (this.writer && s.stat && e.size < REPLACE_NATIVE_FROM) {
      // The same path twice in a plan: the later entry must win, as it would one by one.
      if (this.renaming.has(e.path)) {
        this.sendRenames();
        await Promise.all(this.renamed);
      }
      this.renames.push(s);
      this.renaming.add(e.path);
      if (this.renames.length >= RENAME_BATCH) this.sendRenames();
    } else {
      this.place(s.temp, e.path, e.size);
      s.temp = null;
    }
    this.result.placed.set(e.path, this.fileRecord(e, s.stat ?? statKeyOf(this.guard.lstatBig(e.path))));
    this.result.written++;
  }

  private sendRenames(): void {
    if (this.renames.length) this.renamed.push(this.renameBatch(this.renames));
    this.renames = [];
    this.renaming = new Set();
  }

  /** Renames a staged file or link into place; a directory in the way goes only when it is empty. */
  private place(temp: string, rel: string, size = 0): void {
    // Worth it only where a rename would wait: over a large file.
    if (this.opts.replaceFile && size >= REPLACE_NATIVE_FROM) {
      try {
        this.opts.replaceFile(this.guard.at(temp), this.guard.at(rel));
        return;
      } catch {
        // Whatever stands there now, the plain rename below says how to handle it.
      }
    }
    try {
      this.guard.rename(temp, rel);
    } catch (e) {
      if (!inTheWay((e as NodeJS.ErrnoException).code)) throw e;
      this.clearForFile(rel);
      this.guard.rename(temp, rel);
    }
  }

  /** A file or symlink where a directory stands: only an empty directory may go. */
  private clearForFile(rel: string): void {
    const st = this.guard.lstat(rel);
    if (!st?.isDirectory()) return;
    try {
      this.guard.rmdir(rel);
    } catch {
      throw new Error(`cannot replace directory ${displayPath(rel)}: it holds files skysync did not place; move them away and retry`);
    }
  }

  /**
   * Renames staged files into place off this thread. Only plain renames of distinct files whose parents were
   * checked go here: none depends on another, nor on anything else the transition does once its parent exists.
   * The writer opens every directory from the root without following symlinks. A rename that meets a
   * directory, or fails, is retried here the usual way.
   */
  private async renameBatch(batch: Staged[]): Promise<void> {
    const r = this.result;
    let failures: Array<{ index: number; errno?: number | null; message: string }>;
    try {
      failures = await this.writer!.renameFiles(this.opts.root, batch.map((s) => s.temp!).join('\0'), batch.map((s) => s.entry.path).join('\0'));
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
        r.placed.delete(rel);
        r.written--;
        r.failed.push({ path: rel, error: (err as Error).message });
      }
    }
    batch.forEach((s, i) => {
      if (!failed.has(i)) s.temp = null;
    });
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
}

/**
 * Sets mode and mtime on a file that already holds the entry's bytes. The open does not follow a symlink, and
 * the file must still be the one recorded (inode, size, mtime), or a job's change would get the new metadata.
 */
function retouch(guard: RootGuard, e: FileEntry, cur: PlacedRecord): StatKey {
  const fd = guard.openRead(e.path);
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    if (!st.isFile() || st.ino.toString() !== cur.stat.ino || Number(st.size) !== cur.stat.size || st.mtimeNs.toString() !== cur.stat.mtimeNs) {
      throw new Error(`${displayPath(e.path)} changed on this side during the sync; push again`);
    }
    fs.fchmodSync(fd, e.mode);
    const t = e.mtimeSec + e.mtimeNsec / 1e9;
    fs.futimesSync(fd, t, t);
    return statKeyOf(fs.fstatSync(fd, { bigint: true }));
  } finally {
    fs.closeSync(fd);
  }
}
