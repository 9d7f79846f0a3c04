// Every path operation of the receiver goes through here, relative to a directory handle that was opened one
// component at a time from the root with O_NOFOLLOW|O_DIRECTORY. Node has no openat(2), so an operation on the
// name `n` inside the directory held by fd `d` uses `/proc/self/fd/<d>/n`: the kernel resolves the magic link to
// the very directory the fd holds, whatever is at its old path now, and only the last component (a single name,
// never followed: lstat, O_NOFOLLOW, rename, unlink) is looked up. A job that swaps a directory for a symlink
// between our check and our use therefore cannot redirect a write: the handle was never the symlink.
//
// Handles are cached for the duration of one sync (one Receiver), a bounded number of them, and closed at its
// end. A cached handle stays bound to its directory even when a job renames that directory away during the sync:
// files staged or placed after that land in the renamed directory (where the job put it), not through whatever
// took its name. That is the choice here: writes follow the directory skysync checked, never a name that was
// swapped, and the temp files of a sync stay reachable for its cleanup. A handle evicted from the cache (or one
// the receiver itself removed) is opened again from its nearest cached ancestor with the same checks.
//
// Without /proc (not Linux), the guard falls back to absolute paths checked component by component before use:
// the old behaviour, not immune to a swap between check and use.

import fs from 'node:fs';
import { displayPath, parentOf } from '@skysync/protocol';

const { O_RDONLY, O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW, O_DIRECTORY } = fs.constants;
const DIR_FLAGS = O_RDONLY | O_DIRECTORY | O_NOFOLLOW;
/** Directory handles a sync keeps open at once: far below the usual limit of 1024 descriptors, beside the
 * native writer's own. */
const DIRS_KEPT = 128;
const PROC_FD = fs.existsSync('/proc/self/fd') ? '/proc/self/fd/' : null;

export class RefusedPath extends Error {
  override name = 'RefusedPath';
}

interface Handle {
  fd: number;
  /** What names the directory in a path: `/proc/self/fd/<fd>/` (or its absolute path, without /proc). */
  prefix: Buffer;
}

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException).code;
}

function lastName(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? rel : rel.slice(i + 1);
}

export class RootGuard {
  private readonly root: Handle;
  /** Open directories by path relative to the root, least recently used first. */
  private readonly dirs = new Map<string, Handle>();
  private closed = false;

  constructor(readonly rootPath: string) {
    // The root itself may be reached through symlinks: the caller chose it (the agent resolves it first).
    const fd = fs.openSync(rootPath, O_RDONLY | O_DIRECTORY);
    this.root = { fd, prefix: this.prefixOf(fd, Buffer.from(rootPath, 'utf8')) };
  }

  private prefixOf(fd: number, abs: Buffer): Buffer {
    return PROC_FD ? Buffer.from(`${PROC_FD}${fd}/`, 'latin1') : Buffer.concat([abs, Buffer.from('/')]);
  }

  /**
   * The handle of directory `rel` ('' is the root). Each missing component is created (mode 0755 before the
   * umask) when `make` is set; a symlink or anything else that is not a directory on the way is refused.
   */
  dirFd(rel: string, make = false): number {
    return this.named(() => this.dir(rel, make).fd);
  }

  private dir(rel: string, make: boolean): Handle {
    if (this.closed) throw new Error('the sync is over');
    if (rel === '') return this.root;
    const hit = this.dirs.get(rel);
    if (hit) {
      this.dirs.delete(rel);
      this.dirs.set(rel, hit);
      return hit;
    }
    const parent = this.dir(parentOf(rel), make);
    const name = Buffer.from(lastName(rel), 'latin1');
    const path = Buffer.concat([parent.prefix, name]);
    let fd: number;
    try {
      fd = fs.openSync(path, DIR_FLAGS);
    } catch (e) {
      if (errCode(e) !== 'ENOENT' || !make) throw this.notADir(rel, path, e);
      try {
        fs.mkdirSync(path, { mode: 0o755 });
      } catch (m) {
        // Someone else made it meanwhile: open what is there now, with the same checks.
        if (errCode(m) !== 'EEXIST') throw m;
      }
      try {
        fd = fs.openSync(path, DIR_FLAGS);
      } catch (e2) {
        throw this.notADir(rel, path, e2);
      }
    }
    const h: Handle = { fd, prefix: this.prefixOf(fd, Buffer.concat([parent.prefix, name])) };
    this.dirs.set(rel, h);
    if (this.dirs.size > DIRS_KEPT) {
      const [oldest, old] = this.dirs.entries().next().value as [string, Handle];
      this.dirs.delete(oldest);
      fs.closeSync(old.fd);
    }
    return h;
  }

  private notADir(rel: string, path: Buffer, e: unknown): Error {
    const code = errCode(e);
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EPERM') return e as Error;
    const st = fs.lstatSync(path, { throwIfNoEntry: false });
    if (st?.isSymbolicLink()) return new RefusedPath(`refused: ${displayPath(rel)} is a symlink (skysync never writes through one)`);
    if (code === 'ELOOP' || code === 'ENOTDIR') return new RefusedPath(`${displayPath(rel)} is not a directory`);
    return e as Error;
  }

  /** A path naming `rel`'s last component inside its parent's handle; the parents are made when `make` is set.
   * Use it at once: the handle behind it may be closed by a later call. */
  at(rel: string, make = false): Buffer {
    if (rel === '') return this.root.prefix;
    return Buffer.concat([this.dir(parentOf(rel), make).prefix, Buffer.from(lastName(rel), 'latin1')]);
  }

  /** Whether this sync holds a handle on directory `rel` (checked, or made, by it). */
  isOpen(rel: string): boolean {
    return rel === '' || this.dirs.has(rel);
  }

  /** Makes `rel` and its parents as plain directories (no-op when they are). */
  ensureDir(rel: string): void {
    this.named(() => this.dir(rel, true));
  }

  /** Checks that `rel`'s parents are plain directories, without making any. */
  checkParents(rel: string): void {
    this.named(() => this.dir(parentOf(rel), false));
  }

  lstat(rel: string): fs.Stats | undefined {
    return this.named(() => fs.lstatSync(this.at(rel), { throwIfNoEntry: false }));
  }

  lstatBig(rel: string): fs.BigIntStats {
    return this.named(() => fs.lstatSync(this.at(rel), { bigint: true }));
  }

  openRead(rel: string): number {
    return this.named(() => fs.openSync(this.at(rel), O_RDONLY | O_NOFOLLOW));
  }

  /**
   * A new file, never through a symlink nor over anything that exists; mode 0600 until its own is set. Open for
   * reading too: chunks the kernel copied into it are verified where they landed.
   */
  createExclusive(rel: string): number {
    return this.named(() => fs.openSync(this.at(rel), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600));
  }

  rename(from: string, to: string): void {
    this.named(() => {
      const a = this.at(from);
      fs.renameSync(a, this.at(to));
    });
  }

  unlink(rel: string): void {
    this.named(() => fs.unlinkSync(this.at(rel)));
  }

  /** Removes an empty directory, and forgets the handles of it and below. */
  rmdir(rel: string): void {
    this.named(() => fs.rmdirSync(this.at(rel)));
    this.forget(rel);
  }

  mkdir(rel: string, mode: number): void {
    this.named(() => fs.mkdirSync(this.at(rel), { mode }));
  }

  symlink(target: Buffer, rel: string): void {
    this.named(() => fs.symlinkSync(target, this.at(rel)));
  }

  /**
   * Runs `op`, and in its error names paths as the user knows them: Node quotes the path it was given, and a
   * handle's `/proc/self/fd/<fd>/` means nothing to the user (who would read "read-only file system, open
   * '/proc/self/fd/18/...'"); the directory's path inside the destination does.
   */
  private named<T>(op: () => T): T {
    try {
      return op();
    } catch (e) {
      if (PROC_FD && e instanceof Error) {
        e.message = e.message.replace(/\/proc\/self\/fd\/(\d+)\//g, (whole, fd: string) => {
          const rel = this.relOf(Number(fd));
          return rel === undefined ? whole : rel === '' ? '' : `${displayPath(rel)}/`;
        });
      }
      throw e;
    }
  }

  /** The path (relative to the root) of the directory a handle holds, if it is one of ours. */
  private relOf(fd: number): string | undefined {
    if (fd === this.root.fd) return '';
    for (const [rel, h] of this.dirs) if (h.fd === fd) return rel;
    return undefined;
  }

  /** Sets a directory's mode on its handle: chmod by name would follow a symlink swapped in. */
  chmodDir(rel: string, mode: number): void {
    fs.fchmodSync(this.dirFd(rel), mode);
  }

  /** What a directory holds (names latin1), without following anything. */
  list(rel: string): Array<{ name: string; dir: boolean }> {
    return this.named(() => fs.readdirSync(this.dir(rel, false).prefix, { withFileTypes: true, encoding: 'buffer' })).map((d) => ({
      name: (d.name as Buffer).toString('latin1'),
      dir: d.isDirectory(),
    }));
  }

  /** Drops the handles of `rel` and everything below: it was removed (or replaced). */
  forget(rel: string): void {
    for (const [d, h] of this.dirs) {
      if (d === rel || d.startsWith(rel + '/')) {
        this.dirs.delete(d);
        fs.closeSync(h.fd);
      }
    }
  }

  /** Closes every handle; the guard refuses any later operation. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.dirs.values()) fs.closeSync(h.fd);
    this.dirs.clear();
    fs.closeSync(this.root.fd);
  }
}
