// What the agent placed at a destination, behind one interface with two homes: the native tree (binary,
// compared and stat-checked in Rust, so a no-op push never decodes it entry by entry in JavaScript) when the
// addon is here, and a TypeScript manifest otherwise. Each keeps its own file; finding only the other kind's
// file means "state unknown", and the client then describes everything (still correct, just slower once).

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { HeldChunks, PlacedRecord } from '@skysync/apply';
import { type NativeAddon, PLACED_RECORD, type Tree, chunkRefCount, chunkRefId, chunkRefLen } from '@skysync/chunking';
import { trace } from '@skysync/protocol';
import type { WatchAnswer } from '@skysync/service';
import { findDrift } from './drift.js';
import { loadManifest, saveManifest, type Manifest } from './manifest.js';
import { ForeignPaths, type PushedPaths } from './sources.js';

/** The agent's record of what it placed at one destination: its tree store. */
export interface TreeStore {
  readonly generation: string | null;
  readonly size: number;
  has(path: string): boolean;
  /** Placed here and part of the source of the latest push, not left by another source (`sources.ts`). */
  ofSource(path: string): boolean;
  held(untrusted: Set<string>): HeldChunks;
  drift(root: string): Promise<string[]>;
  apply(placed: Map<string, PlacedRecord>, gone: string[]): void;
  /**
   * Records what the push just applied said about its source, for `ofSource`. `surelyHeld`: paths known to be
   * held without asking (what `apply` just placed and did not also forget), so that the usual case asks nothing.
   */
  settleSources(pushed: PushedPaths, surelyHeld: (path: string) => boolean): void;
  /**
   * Says "generation unknown" before the destination changes. With it done first, a crash anywhere later
   * leaves "unknown", never a wrong generation, and `save` may follow the answer to the client.
   */
  invalidate(): Promise<void>;
  /** Saves under a new generation (after `invalidate`). */
  save(generation: string): Promise<void>;
  /** The push changed nothing here: an agent that serves the next push too may keep this state in memory. */
  unchanged(drifted: boolean): Promise<void>;
}

async function writeAtomic(file: string, data: Buffer | string): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fh = await fsp.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    // No fsync: see Snapshot::save in native/core (a lost state only costs a full comparison next time).
    await fh.writeFile(data);
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
}

/** Writes the foreign paths when they changed. */
async function saveForeign(foreign: ForeignPaths): Promise<void> {
  const data = foreign.toSave();
  if (!data) return;
  await writeAtomic(foreign.file, data);
  foreign.saved();
}

/** The kinds by their number in a placed record. */
const KINDS = ['file', 'dir', 'symlink'];

/** A whole number within ±2^53 as a little-endian i64. */
function writeI64(buf: Buffer, n: number, at: number): void {
  const hi = Math.floor(n / 0x1_0000_0000);
  buf.writeUInt32LE(n - hi * 0x1_0000_0000, at);
  buf.writeInt32LE(hi, at + 4);
}

/**
 * Trees an agent keeps between the pushes it serves (a warm connection hands it push after push), by state
 * file, with the identity of the file they were loaded from or saved to. A push takes its tree out and puts it
 * back only once saved or known unchanged, so a tree changed in memory by a push that failed is never reused.
 */
const keptTrees = new Map<string, { tree: Tree; file: string }>();

/** Asks the destination's watch service (dest-watch.ts) what changed since a token; null when there is none. */
export type DestWatch = (token: string | null) => Promise<WatchAnswer | null>;

function fileIdentity(file: string): string | null {
  const st = fs.statSync(file, { bigint: true, throwIfNoEntry: false });
  return st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}` : null;
}

class NativeStore implements TreeStore {
  constructor(
    private readonly tree: Tree,
    readonly generation: string | null,
    private readonly base: string,
    private readonly watch: DestWatch | null,
    private readonly foreign: ForeignPaths,
  ) {}

  static async open(native: NativeAddon, base: string, log: (m: string) => void, watch: DestWatch | null): Promise<NativeStore> {
    let generation: string | null = null;
    try {
      generation = (JSON.parse(await fsp.readFile(`${base}.gen`, 'utf8')) as { generation: string | null }).generation;
    } catch {
      generation = null;
    }
    let tree: Tree;
    const kept = keptTrees.get(base);
    keptTrees.delete(base);
    try {
      const identity = fileIdentity(`${base}.tree`);
      tree = kept && identity !== null && kept.file === identity ? kept.tree : native.Tree.load(`${base}.tree`);
    } catch (e) {
      if (fs.existsSync(`${base}.tree`)) log(`${(e as Error).message}; starting over`);
      tree = native.Tree.empty(null);
      generation = null;
    }
    const foreign = ForeignPaths.load(`${base}.foreign`);
    if (!foreign.known) generation = null;
    return new NativeStore(tree, generation, base, watch, foreign);
  }

  get size(): number {
    return this.tree.size;
  }

  has(p: string): boolean {
    return this.tree.entry(p) !== null;
  }

  ofSource(p: string): boolean {
    return !this.foreign.has(p) && this.has(p);
  }

  settleSources(pushed: PushedPaths, surelyHeld: (path: string) => boolean): void {
    const tree = this.tree;
    this.foreign.settle(pushed, { size: tree.size, has: (p) => this.has(p), paths: () => tree.entries().map((e) => e.path) }, surelyHeld);
  }

  held(untrusted: Set<string>): HeldChunks {
    // An empty tree (a first push) answers every lookup with nothing: skip a call into the addon per file.
    const empty = this.tree.size === 0;
    return {
      recipeOf: (p) => (untrusted.has(p) ? null : (this.tree.recipe(p)?.chunks ?? null)),
      locate: (ids) => this.tree.locateChunks(Buffer.concat(ids)).map((l) => (l && !untrusted.has(l.path) ? { path: l.path, offset: l.offset } : null)),
      current: (p) => {
        if (empty || untrusted.has(p)) return null;
        const e = this.tree.entry(p);
        if (!e) return null;
        const r = e.kind === 'file' ? this.tree.recipe(p) : null;
        const [mtimeNs, ino] = this.tree.observed(p) ?? ['0', '0'];
        return {
          kind: e.kind,
          mode: e.mode,
          size: e.size,
          mtimeSec: e.mtimeSec,
          mtimeNsec: e.mtimeNsec,
          target: e.target,
          chunks: r?.chunks,
          digest: r?.digest,
          stat: { size: e.size, mtimeNs: mtimeNs!, ino: ino! },
        };
      },
    };
  }

  /** The watch token taken before this push's drift check: saved once the push completed. */
  private pendingWatch: string | null = null;

  /**
   * The token saved by the last completed push: what no event touched since it was taken is as that push's
   * check left it (the tree's records change only through pushes, which save a new token). A push that failed
   * saves none, so the next check still covers whatever this one found.
   */
  private savedWatch(): string | null {
    try {
      const t = (JSON.parse(fs.readFileSync(`${this.base}.watch`, 'utf8')) as { token?: unknown }).token;
      return typeof t === 'string' ? t : null;
    } catch {
      return null;
    }
  }

  /** The token read from disk for this push's check (not written again when the new one is the same). */
  private lastWatch: string | null = null;

  async drift(root: string): Promise<string[]> {
    // Nothing placed yet: no check, and no service yet either, which would only chase the first push's writes.
    if (!this.tree.size) return [];
    const saved = this.watch ? this.savedWatch() : null;
    this.lastWatch = saved;
    const answer = this.watch ? await this.watch(saved) : null;
    if (answer?.token) this.pendingWatch = answer.token;
    if (saved && answer?.token && !answer.full) {
      trace(`agent: drift check limited to ${answer.dirs.length} directories and ${answer.subtrees.length} subtrees by the watch service`);
      return this.tree.driftIn(root, answer.dirs, answer.subtrees);
    }
    if (answer) trace(`agent: full drift check (${answer.reason ?? (saved ? 'the watch service knows too little' : 'no watch token saved')})`);
    return this.tree.drift(root);
  }

  private async commitWatch(): Promise<void> {
    const token = this.pendingWatch;
    this.pendingWatch = null;
    if (!token || token === this.lastWatch) return;
    // Lost, it only costs a full check next time.
    await writeAtomic(`${this.base}.watch`, JSON.stringify({ token })).catch(() => {});
  }

  apply(placed: Map<string, PlacedRecord>, gone: string[]): void {
    const records = Buffer.alloc(placed.size * PLACED_RECORD.size);
    const paths: string[] = [];
    const targets: string[] = [];
    const chunks: Buffer[] = [];
    let o = 0;
    for (const [p, r] of placed) {
      records[o + PLACED_RECORD.kind] = KINDS.indexOf(r.kind);
      records.writeUInt32LE(r.mode, o + PLACED_RECORD.mode);
      writeI64(records, r.kind === 'file' ? r.size : r.stat.size, o + PLACED_RECORD.fileSize);
      writeI64(records, r.mtimeSec, o + PLACED_RECORD.mtimeSec);
      records.writeUInt32LE(r.mtimeNsec, o + PLACED_RECORD.mtimeNsec);
      if (r.kind === 'file') {
        const c = r.chunks ?? Buffer.alloc(0);
        records.writeUInt32LE(chunkRefCount(c), o + PLACED_RECORD.chunkCount);
        chunks.push(c);
      }
      records.writeBigInt64LE(BigInt(r.stat.mtimeNs), o + PLACED_RECORD.observedMtimeNs);
      records.writeBigUInt64LE(BigInt(r.stat.ino), o + PLACED_RECORD.ino);
      if (r.kind === 'symlink') targets.push(r.target ?? '');
      paths.push(p);
      o += PLACED_RECORD.size;
    }
    this.tree.updatePacked(paths.join('\0'), records, Buffer.concat(chunks), targets.join('\0'), gone);
    this.foreign.forget(gone);
  }

  async invalidate(): Promise<void> {
    await writeAtomic(`${this.base}.gen`, JSON.stringify({ generation: null }));
  }

  async save(generation: string): Promise<void> {
    this.tree.save(`${this.base}.tree`);
    const identity = fileIdentity(`${this.base}.tree`);
    // Before the generation they belong to: until it lands, the generation on disk says "unknown".
    await saveForeign(this.foreign);
    await writeAtomic(`${this.base}.gen`, JSON.stringify({ generation }));
    if (identity !== null) keptTrees.set(this.base, { tree: this.tree, file: identity });
    await this.commitWatch();
  }

  async unchanged(drifted: boolean): Promise<void> {
    const identity = fileIdentity(`${this.base}.tree`);
    if (identity !== null) keptTrees.set(this.base, { tree: this.tree, file: identity });
    // Drift that nobody re-sent stays to be found by the next check.
    if (!drifted) await this.commitWatch();
  }
}

class JsStore implements TreeStore {
  constructor(
    private readonly m: Manifest,
    private readonly file: string,
    private readonly foreign: ForeignPaths,
  ) {}

  static async open(base: string, log: (m: string) => void): Promise<JsStore> {
    const { manifest, warning } = await loadManifest(`${base}.manifest`);
    if (warning) log(warning);
    const foreign = ForeignPaths.load(`${base}.foreign`);
    if (!foreign.known) manifest.generation = null;
    return new JsStore(manifest, `${base}.manifest`, foreign);
  }

  get generation(): string | null {
    return this.m.generation;
  }

  get size(): number {
    return this.m.entries.size;
  }

  has(p: string): boolean {
    return this.m.entries.has(p);
  }

  ofSource(p: string): boolean {
    return !this.foreign.has(p) && this.has(p);
  }

  settleSources(pushed: PushedPaths, surelyHeld: (path: string) => boolean): void {
    const entries = this.m.entries;
    this.foreign.settle(pushed, { size: entries.size, has: (p) => entries.has(p), paths: () => entries.keys() }, surelyHeld);
  }

  held(untrusted: Set<string>): HeldChunks {
    let index: Map<string, { path: string; offset: number }> | null = null;
    const entries = this.m.entries;
    return {
      recipeOf: (p) => (untrusted.has(p) ? null : (entries.get(p)?.chunks ?? null)),
      current: (p) => (untrusted.has(p) ? null : (entries.get(p) ?? null)),
      locate: (ids) => {
        if (!index) {
          index = new Map();
          for (const [p, r] of entries) {
            if (r.kind !== 'file' || !r.chunks || untrusted.has(p)) continue;
            let off = 0;
            for (let i = 0, n = chunkRefCount(r.chunks); i < n; i++) {
              const key = chunkRefId(r.chunks, i).toString('hex');
              if (!index.has(key)) index.set(key, { path: p, offset: off });
              off += chunkRefLen(r.chunks, i);
            }
          }
        }
        return ids.map((id) => index!.get(id.toString('hex')) ?? null);
      },
    };
  }

  drift(root: string): Promise<string[]> {
    return findDrift(root, this.m.entries);
  }

  apply(placed: Map<string, PlacedRecord>, gone: string[]): void {
    for (const p of gone) this.m.entries.delete(p);
    for (const [p, r] of placed) this.m.entries.set(p, r);
    this.foreign.forget(gone);
  }

  // The manifest and its generation are one file, replaced whole; the foreign paths are not in it, and are
  // written after it.
  async invalidate(): Promise<void> {
    await this.foreign.invalidate();
  }

  async unchanged(_drifted: boolean): Promise<void> {}

  async save(generation: string): Promise<void> {
    this.m.generation = generation;
    await saveManifest(this.file, this.m);
    await saveForeign(this.foreign);
  }
}

export function openStore(native: NativeAddon | null, base: string, log: (m: string) => void, watch: DestWatch | null = null): Promise<TreeStore> {
  return native ? NativeStore.open(native, base, log, watch) : JsStore.open(base, log);
}
