// What the agent placed at a destination, behind one interface with two homes: the native tree (binary,
// compared and stat-checked in Rust, so a no-op push never decodes it entry by entry in JavaScript) when the
// addon is here, and a TypeScript manifest otherwise. Each keeps its own file; finding only the other kind's
// file means "state unknown", and the client then describes everything (still correct, just slower once).

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { HeldChunks, PlacedRecord } from '@skysync/apply';
import type { NativeAddon } from '@skysync/chunking';
import { CHUNK_REF_SIZE } from '@skysync/protocol';
import { findDrift } from './drift.js';
import { loadManifest, saveManifest, type Manifest } from './manifest.js';

type Tree = InstanceType<NativeAddon['Tree']>;

export interface ManifestStore {
  readonly generation: string | null;
  readonly size: number;
  has(path: string): boolean;
  held(untrusted: Set<string>): HeldChunks;
  drift(root: string): Promise<string[]>;
  apply(placed: Map<string, PlacedRecord>, gone: string[]): void;
  /**
   * Says "generation unknown" before the destination changes. With it done first, a crash anywhere later
   * leaves "unknown", never a wrong generation, and `save` may follow the answer to the client.
   */
  invalidate(): Promise<void>;
  /** Saves under a new generation (after `invalidate`). */
  save(generation: string): Promise<void>;
  /** The push changed nothing here: an agent that serves the next push too may keep this state in memory. */
  unchanged(drifted: boolean): void;
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

/** Bytes of one entry in `Tree.updatePacked`'s records, and the kinds by their number there. */
const PLACED_RECORD = 48;
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

/** The addon's inotify watcher (`native/core/src/watch.rs`), as this file uses it. */
interface DestWatcher {
  changesSince(token: string | null): { state: 'ok' | 'starting' | 'dead'; token?: string | null; full: boolean; dirs: string[]; subtrees: string[] };
  close(): void;
}

/**
 * Watches of destinations, started once a client hands this agent to a warm connection (it will serve more
 * pushes). A drift check then stats only what sits in directories that saw a change since the last check that
 * a push completed after: a check whose push failed must not hide the drift it found from the next one.
 */
const destWatches = new Map<string, { watcher: DestWatcher; token: string | null }>();

export function watchDestination(native: NativeAddon | null, root: string, log: (m: string) => void): void {
  const Watcher = (native as unknown as { Watcher?: new (root: string) => DestWatcher } | null)?.Watcher;
  if (!Watcher || destWatches.has(root)) return;
  try {
    destWatches.set(root, { watcher: new Watcher(root), token: null });
  } catch (e) {
    // Not supported here (platform, filesystem, inotify limits): every check stays a full one.
    log(`not watching ${root}: ${(e as Error).message}`);
    destWatches.set(root, { watcher: { changesSince: () => ({ state: 'dead', full: true, dirs: [], subtrees: [] }), close: () => {} }, token: null });
  }
}

function fileIdentity(file: string): string | null {
  const st = fs.statSync(file, { bigint: true, throwIfNoEntry: false });
  return st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}` : null;
}

class NativeStore implements ManifestStore {
  constructor(
    private readonly native: NativeAddon,
    private readonly tree: Tree,
    readonly generation: string | null,
    private readonly base: string,
  ) {}

  static async open(native: NativeAddon, base: string, log: (m: string) => void): Promise<NativeStore> {
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
    return new NativeStore(native, tree, generation, base);
  }

  get size(): number {
    return this.tree.size;
  }

  has(p: string): boolean {
    return this.tree.entry(p) !== null;
  }

  held(untrusted: Set<string>): HeldChunks {
    // An empty tree (a first push) answers every lookup with nothing: skip a call into the addon per file.
    const empty = this.tree.size === 0;
    return {
      recipeOf: (p) => (untrusted.has(p) ? null : (this.tree.recipe(p)?.chunks ?? null)),
      locate: (ids) =>
        this.tree.locateChunks(Buffer.concat(ids)).map((l) => (l && !untrusted.has(l.path) ? { path: l.path, offset: l.offset } : null)),
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

  /** The watch token taken before this push's drift check: committed once the push completed. */
  private pendingWatch: { root: string; token: string } | null = null;

  async drift(root: string): Promise<string[]> {
    const w = destWatches.get(root);
    const answer = w?.watcher.changesSince(w.token);
    if (w && answer?.state === 'ok' && answer.token) this.pendingWatch = { root, token: answer.token };
    if (!this.tree.size) return [];
    // The tree's records change only through pushes that commit the token, so what no event touched since that
    // token is as the last completed check left it.
    if (w?.token && answer?.state === 'ok' && !answer.full && typeof this.tree.driftIn === 'function') {
      return this.tree.driftIn(root, answer.dirs, answer.subtrees);
    }
    return this.tree.drift(root);
  }

  private commitWatch(): void {
    const p = this.pendingWatch;
    this.pendingWatch = null;
    const w = p ? destWatches.get(p.root) : undefined;
    if (p && w) w.token = p.token;
  }

  apply(placed: Map<string, PlacedRecord>, gone: string[]): void {
    // An addon from before updatePacked (an agent installed earlier) takes one object per entry.
    if (typeof this.tree.updatePacked !== 'function') return this.applyEach(placed, gone);
    const records = Buffer.alloc(placed.size * PLACED_RECORD);
    const paths: string[] = [];
    const targets: string[] = [];
    const chunks: Buffer[] = [];
    let o = 0;
    for (const [p, r] of placed) {
      records[o] = KINDS.indexOf(r.kind);
      records.writeUInt32LE(r.mode, o + 4);
      writeI64(records, r.kind === 'file' ? r.size : r.stat.size, o + 8);
      writeI64(records, r.mtimeSec, o + 16);
      records.writeUInt32LE(r.mtimeNsec, o + 24);
      if (r.kind === 'file') {
        const c = r.chunks ?? Buffer.alloc(0);
        records.writeUInt32LE(c.length / CHUNK_REF_SIZE, o + 28);
        chunks.push(c);
      }
      records.writeBigInt64LE(BigInt(r.stat.mtimeNs), o + 32);
      records.writeBigUInt64LE(BigInt(r.stat.ino), o + 40);
      if (r.kind === 'symlink') targets.push(r.target ?? '');
      paths.push(p);
      o += PLACED_RECORD;
    }
    this.tree.updatePacked(paths.join('\0'), records, Buffer.concat(chunks), targets.join('\0'), gone);
  }

  private applyEach(placed: Map<string, PlacedRecord>, gone: string[]): void {
    const entries = [...placed].map(([p, r]) => ({
      path: p,
      kind: r.kind,
      mode: r.mode,
      size: r.kind === 'file' ? r.size : r.stat.size,
      mtimeSec: r.mtimeSec,
      mtimeNsec: r.mtimeNsec,
      observedMtimeNs: r.stat.mtimeNs,
      ino: r.stat.ino,
      target: r.target,
      chunks: r.kind === 'file' ? (r.chunks ?? Buffer.alloc(0)) : undefined,
    }));
    this.tree.update(entries, gone);
  }

  async invalidate(): Promise<void> {
    await writeAtomic(`${this.base}.gen`, JSON.stringify({ generation: null }));
  }

  async save(generation: string): Promise<void> {
    this.tree.save(`${this.base}.tree`);
    const identity = fileIdentity(`${this.base}.tree`);
    await writeAtomic(`${this.base}.gen`, JSON.stringify({ generation }));
    if (identity !== null) keptTrees.set(this.base, { tree: this.tree, file: identity });
    this.commitWatch();
  }

  unchanged(drifted: boolean): void {
    const identity = fileIdentity(`${this.base}.tree`);
    if (identity !== null) keptTrees.set(this.base, { tree: this.tree, file: identity });
    // Drift that nobody re-sent stays to be found by the next check.
    if (!drifted) this.commitWatch();
  }
}

class JsStore implements ManifestStore {
  constructor(
    private readonly m: Manifest,
    private readonly file: string,
  ) {}

  static async open(base: string, log: (m: string) => void): Promise<JsStore> {
    const { manifest, warning } = await loadManifest(`${base}.manifest`);
    if (warning) log(warning);
    return new JsStore(manifest, `${base}.manifest`);
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
            for (let o = 0; o < r.chunks.length; o += CHUNK_REF_SIZE) {
              const key = r.chunks.toString('hex', o, o + 32);
              if (!index.has(key)) index.set(key, { path: p, offset: off });
              off += r.chunks.readUInt32LE(o + 32);
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
  }

  // The manifest and its generation are one file, replaced whole: nothing to mark.
  async invalidate(): Promise<void> {}

  unchanged(_drifted: boolean): void {}

  async save(generation: string): Promise<void> {
    this.m.generation = generation;
    await saveManifest(this.file, this.m);
  }
}

export function openStore(native: NativeAddon | null, base: string, log: (m: string) => void): Promise<ManifestStore> {
  return native ? NativeStore.open(native, base, log) : JsStore.open(base, log);
}
