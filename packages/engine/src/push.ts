// push: scan -> plan -> transfer -> (agent) apply. The agent's drift check runs while we scan.

import path from 'node:path';
import fsp from 'node:fs/promises';
import type { NativeAddon } from '@skysync/chunking';
import {
  type Compression,
  type DeleteMode,
  type Done,
  Frame,
  type Plan,
  type PlanEntry,
  type PushBegin,
  type PushState,
  chooseCompression,
  decodeIds,
  displayPath,
  encodeEntries,
  parseJson,
} from '@skysync/protocol';
import { DataPump } from '@skysync/transfer';
import type { Target } from '@skysync/transport';
import { Planner, type LiteralRef } from './plan.js';
import { expectFrame, openSession } from './session.js';
import { loadState, saveState, stateDirFor } from './state.js';

export interface PushOptions {
  source: string;
  target: Target;
  /** Remote destination as the user wrote it; `~/sky_workdir` by default. */
  dest?: string;
  deleteMode?: DeleteMode;
  dryRun?: boolean;
  native: NativeAddon;
  /** Compression preferences, best first. */
  compression?: Compression[];
  onEvent?: (e: PushEvent) => void;
}

export type PushEvent =
  | { type: 'scanned'; files: number; changes: number }
  | { type: 'progress'; bytesLiteral: number; bytesWire: number; filesSent: number; filesTotal: number }
  | { type: 'warning'; message: string }
  | { type: 'change'; status: string; path: string; kind: string };

/** The statistics every sync reports (the `--json` object has at least these). */
export interface SyncSummary {
  filesScanned: number;
  filesChanged: number;
  filesDeleted: number;
  /** New chunk bytes before compression. */
  bytesLiteral: number;
  /** Bytes written to (push) or read from (pull) the transport. */
  bytesWire: number;
  chunksReused: number;
  durationMs: number;
  transport: string;
}

export interface PushStats extends SyncSummary {
  bytesTotal: number;
  chunksLiteral: number;
  scanMs: number;
  generation: string | null;
  drift: string[];
  kept: string[];
  failed: Array<{ path: string; error: string }>;
  warnings: string[];
  dryRun: boolean;
  changes?: Array<{ status: string; path: string; kind: string }>;
}

const BATCH_ENTRIES = 512;

export async function push(opts: PushOptions): Promise<PushStats> {
  const t0 = performance.now();
  const native = opts.native;
  const source = path.resolve(opts.source);
  const dest = opts.dest ?? '~/sky_workdir';
  const deleteMode = opts.deleteMode ?? 'placed';
  const emit = opts.onEvent ?? (() => {});
  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    emit({ type: 'warning', message: m });
  };
  const stDir = stateDirFor('push', opts.target.key, dest, source);
  const prefs = opts.compression ?? (opts.target.kind === 'local' ? ['none'] : ['zstd', 'deflate', 'none']);

  const state = await loadState(stDir, native);
  if (state.warning) warn(state.warning);
  const session = await openSession(opts.target, prefs);
  try {
    const begin: PushBegin = { op: 'push', dest, base: state.generation, chunkParams: native.defaultChunkParams() };
    // Ask for the remote state now: the agent checks drift while we scan.
    const remote = (async () => {
      await session.agentHello;
      await session.conn.sendJson(Frame.Begin, begin);
      return parseJson<PushState>((await expectFrame(session, Frame.State, `push to ${opts.target.spec}`)).payload, 'state');
    })();
    remote.catch(() => {});
    const tScan = performance.now();
    const scanned = await native.scan(source, state.tree);
    const scanMs = performance.now() - tScan;
    for (const w of scanned.warnings) warn(`${displayPath(w.path) || '.'}: ${w.message}`);
    const agentHello = await session.agentHello;
    const remoteState = await remote;
    const baseValid = state.tree !== null && remoteState.generation !== null && remoteState.generation === state.generation;
    const tree = scanned.tree;
    let changes = scanned.changes;
    if (!baseValid && state.tree) {
      // The remote is not where we left it (another client, a lost state): describe everything, and let the
      // agent find the chunks it already has.
      const deleted = scanned.changes.filter((c) => c.status === 'deleted');
      changes = tree.entries().map((entry) => ({ status: 'added' as const, entry }));
      changes.push(...deleted);
      changes.sort((a, b) => (a.entry.path < b.entry.path ? -1 : a.entry.path > b.entry.path ? 1 : 0));
    }
    const base = baseValid ? state.tree : null;
    const drift = new Set(baseValid ? remoteState.drift : []);
    emit({ type: 'scanned', files: scanned.stats.files, changes: changes.length });

    // Files whose content must be chunked: new or changed locally.
    const toChunk = changes.filter((c) => c.status !== 'deleted' && c.entry.kind === 'file').map((c) => c.entry.path);
    const recipes = new Map<string, { chunks: Buffer; digest: Buffer }>();
    const unreadable = new Set<string>();
    if (toChunk.length) {
      const outcomes = await native.chunkFiles(source, toChunk, null);
      outcomes.forEach((o, i) => {
        const p = toChunk[i]!;
        if (o.recipe && tree.setRecipe(p, o.recipe.chunks)) recipes.set(p, o.recipe);
        else {
          unreadable.add(p);
          tree.forget(p);
          warn(`${displayPath(p)}: ${o.error ?? 'changed while it was read'}; skipped, the remote keeps its copy`);
        }
      });
    }

    // The entries to send, in path order.
    const planner = new Planner(base, drift);
    const entries: Array<{ entry: PlanEntry; literals: LiteralRef[] }> = [];
    let chunksReused = 0;
    let chunksLiteral = 0;
    let filesChanged = 0;
    let filesDeleted = 0;
    const listed: Array<{ status: string; path: string; kind: string }> = [];
    const seen = new Set<string>();
    for (const c of changes) {
      const e = c.entry;
      seen.add(e.path);
      if (c.status === 'deleted') {
        entries.push({ entry: { kind: 'delete', path: e.path, forgetOnly: deleteMode === 'none' }, literals: [] });
        if (deleteMode !== 'none') filesDeleted++;
        listed.push({ status: 'deleted', path: e.path, kind: e.kind });
        continue;
      }
      if (e.kind === 'dir') {
        entries.push({ entry: { kind: 'dir', path: e.path, mode: e.mode }, literals: [] });
      } else if (e.kind === 'symlink') {
        entries.push({ entry: { kind: 'symlink', path: e.path, target: e.target! }, literals: [] });
        filesChanged++;
      } else {
        const r = recipes.get(e.path);
        if (!r) continue;
        const prev = c.prevRecipe && !drift.has(e.path) && baseValid ? c.prevRecipe : null;
        // Same content, same metadata (a racy re-check, or only ctime moved): nothing to send.
        if (prev && prev.digest.equals(r.digest) && c.prevKind === 'file' && !drift.has(e.path)) {
          const before = base?.entry(e.path);
          if (before && before.mode === e.mode && before.mtimeSec === e.mtimeSec && before.mtimeNsec === e.mtimeNsec) continue;
        }
        const fp = planner.planFile(e.path, r.chunks, prev?.chunks ?? null);
        chunksReused += fp.reused;
        chunksLiteral += fp.literals.length;
        filesChanged++;
        entries.push({
          entry: {
            kind: 'file',
            path: e.path,
            mode: e.mode,
            size: e.size,
            mtimeSec: e.mtimeSec,
            mtimeNsec: e.mtimeNsec,
            digest: r.digest,
            ops: fp.ops,
          },
          literals: fp.literals,
        });
      }
      listed.push({ status: c.status, path: e.path, kind: e.kind });
    }
    // Files the remote changed behind our back: the local version wins.
    for (const p of drift) {
      if (seen.has(p)) continue;
      const e = tree.entry(p);
      if (!e) continue;
      if (e.kind === 'symlink') entries.push({ entry: { kind: 'symlink', path: p, target: e.target! }, literals: [] });
      else if (e.kind === 'file') {
        const r = tree.recipe(p);
        if (!r) continue;
        const fp = planner.planFile(p, r.chunks, null);
        chunksReused += fp.reused;
        chunksLiteral += fp.literals.length;
        entries.push({
          entry: { kind: 'file', path: p, mode: e.mode, size: e.size, mtimeSec: e.mtimeSec, mtimeNsec: e.mtimeNsec, digest: r.digest, ops: fp.ops },
          literals: fp.literals,
        });
      }
      filesChanged++;
      listed.push({ status: 'drifted', path: p, kind: e.kind });
    }
    entries.sort((a, b) => (a.entry.path < b.entry.path ? -1 : a.entry.path > b.entry.path ? 1 : 0));
    for (const l of listed) emit({ type: 'change', ...l });

    const stats: PushStats = {
      filesScanned: scanned.stats.files + scanned.stats.symlinks,
      filesChanged,
      filesDeleted,
      bytesLiteral: 0,
      bytesWire: 0,
      bytesTotal: scanned.stats.bytes,
      chunksReused,
      chunksLiteral,
      durationMs: 0,
      scanMs,
      transport: opts.target.kind === 'local' ? 'local' : 'ssh',
      generation: remoteState.generation,
      drift: [...drift].map(displayPath),
      kept: [],
      failed: [...unreadable].map((p) => ({ path: displayPath(p), error: 'unreadable' })),
      warnings,
      dryRun: !!opts.dryRun,
    };
    if (opts.dryRun) {
      stats.changes = listed.map((l) => ({ ...l, path: displayPath(l.path) }));
      stats.bytesLiteral = entries.reduce((a, e) => a + e.literals.reduce((b, l) => b + l.len, 0), 0);
    } else if (entries.length > 0 || !baseValid || deleteMode === 'mirror') {
      const compression = chooseCompression(prefs, agentHello.compression);
      const mode: Plan['mode'] = baseValid ? 'data' : 'need';
      const plan: Plan = { mode, compression, deleteMode, dryRun: false };
      const conn = session.conn;
      await conn.sendJson(Frame.Plan, plan);
      const pump = new DataPump(conn, compression, native, source);
      let filesSent = 0;
      const progress = (): void =>
        emit({ type: 'progress', bytesLiteral: pump.bytesLiteral, bytesWire: conn.bytesWritten, filesSent, filesTotal: entries.length });
      if (mode === 'data') {
        for (let i = 0; i < entries.length; i += BATCH_ENTRIES) {
          const batch = entries.slice(i, i + BATCH_ENTRIES);
          await conn.send(Frame.Entries, encodeEntries(batch.map((b) => b.entry)));
          for (const b of batch) {
            for (const l of b.literals) await pump.addFromFile(b.entry.path, l.offset, l.len);
            filesSent++;
          }
          progress();
        }
        await conn.send(Frame.PlanEnd, Buffer.alloc(0));
      } else {
        const where = new Map<string, { path: string; offset: number; len: number }>();
        for (const b of entries) {
          if (b.entry.kind !== 'file') continue;
          const r = recipes.get(b.entry.path) ?? tree.recipe(b.entry.path);
          if (!r) continue;
          let off = 0;
          for (let o = 0; o < r.chunks.length; o += 36) {
            const k = r.chunks.toString('hex', o, o + 32);
            const len = r.chunks.readUInt32LE(o + 32);
            if (!where.has(k)) where.set(k, { path: b.entry.path, offset: off, len });
            off += len;
          }
        }
        for (let i = 0; i < entries.length; i += BATCH_ENTRIES) {
          await conn.send(Frame.Entries, encodeEntries(entries.slice(i, i + BATCH_ENTRIES).map((b) => b.entry)));
        }
        await conn.send(Frame.PlanEnd, Buffer.alloc(0));
        const need = decodeIds((await expectFrame(session, Frame.Need, 'push')).payload);
        for (const id of need) {
          const loc = where.get(id.toString('hex'));
          if (!loc) throw new Error('the agent asked for a chunk this push does not have');
          await pump.addFromFile(loc.path, loc.offset, loc.len);
        }
        stats.chunksReused = Math.max(0, chunksLiteral - need.length) + chunksReused;
        stats.chunksLiteral = need.length;
      }
      await pump.finish();
      progress();
      const done = parseJson<Done>((await expectFrame(session, Frame.Done, `push to ${opts.target.spec}`)).payload, 'done');
      for (const f of done.failed) {
        if (f.path) tree.forget(f.path);
        stats.failed.push({ path: displayPath(f.path), error: f.error });
      }
      stats.kept = done.kept.map(displayPath);
      stats.generation = done.generation;
      stats.bytesLiteral = pump.bytesLiteral;
      if (done.generation) {
        await saveState(stDir, done.generation, tree, { source, target: opts.target.key, dest });
      }
    }
    else if (changes.length > 0 && remoteState.generation) {
      // Only re-checked entries (racy timestamps, metadata the remote does not keep): remember them as settled.
      await saveState(stDir, remoteState.generation, tree, { source, target: opts.target.key, dest });
    }
    stats.bytesWire = session.conn.bytesWritten;
    stats.durationMs = performance.now() - t0;
    return stats;
  } finally {
    await session.close();
  }
}

/** Checks the source before anything else, so a typo gives one clear line. */
export async function checkSource(dir: string): Promise<void> {
  const st = await fsp.stat(dir).catch(() => null);
  if (!st) throw new Error(`${dir}: no such directory; pass --workdir DIR or run from your project`);
  if (!st.isDirectory()) throw new Error(`${dir}: not a directory; the workdir must be a directory`);
}
