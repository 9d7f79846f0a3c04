// pull: the agent lists and chunks the remote item and sends the plan; we answer with the chunks we lack
// (anything already in the local destination is reused) and apply like the agent does on push.

import fsp from 'node:fs/promises';
import path from 'node:path';
import { LaneMerger, Receiver, STREAM_HIGH_WATER, type HeldChunks } from '@skysync/apply';
import { CHUNK_REF_SIZE, chunkRefCount, chunkRefId, chunkRefLen, createNativeChunker, type NativeAddon } from '@skysync/chunking';
import {
  type Compression,
  Frame,
  LanesSwitch,
  Plan,
  type PlanEntry,
  type PullBegin,
  PullState,
  createBlockDecoder,
  decodeEntries,
  displayPath,
  frameName,
  ProtocolError,
  remoteError,
} from '@skysync/protocol';
import type { Target } from '@skysync/transport';
import { LANE_AFTER_BYTES, type OpenLane } from '@skysync/transfer';
import { laneCount, openLanes } from './lanes.js';
import { expectFrame, openSession, type Session } from './session.js';
import { PROGRESS_INTERVAL_MS, type PullProgress, type SyncSummary } from './stats.js';

export interface PullOptions {
  target: Target;
  remotePath: string;
  localPath: string;
  native: NativeAddon;
  compression?: Compression[];
  /** Byte progress while data arrives (every {@link PROGRESS_INTERVAL_MS}, and once at the end). */
  onProgress?: (p: PullProgress) => void;
}

export interface PullStats extends SyncSummary {
  failed: Array<{ path: string; error: string }>;
  warnings: string[];
  /** Channels that carried the data (more than 1: lanes, see docs/PROTOCOL.md). */
  lanes: number;
}

/** What the local destination already holds, found by chunking it (only for the files the plan mentions). */
async function localHeld(
  root: string,
  paths: string[],
  native: NativeAddon,
  early: EarlyChunk | null,
): Promise<{ held: HeldChunks; digests: Map<string, Buffer>; stats: Map<string, { mode: number; mtimeMs: number }> }> {
  const present: string[] = [];
  const stats = new Map<string, { mode: number; mtimeMs: number }>();
  await Promise.all(
    paths.map(async (p) => {
      const st = await fsp.lstat(Buffer.concat([Buffer.from(root), Buffer.from('/' + p, 'latin1')])).catch(() => null);
      if (st?.isFile()) {
        present.push(p);
        stats.set(p, { mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs) });
      }
    }),
  );
  // The single local file chunked while the agent was busy is used as it is, if it is the one asked for.
  const usable = early && present.length === 1 && path.join(root, Buffer.from(present[0]!, 'latin1').toString()) === early.file ? await early.outcome : null;
  const outcomes = usable ? [usable] : present.length ? await native.chunkFiles(root, present, null) : [];
  const recipes = new Map<string, Buffer>();
  const digests = new Map<string, Buffer>();
  const index = new Map<string, { path: string; offset: number }>();
  outcomes.forEach((o, i) => {
    if (!o.recipe) return;
    const p = present[i]!;
    recipes.set(p, o.recipe.chunks);
    digests.set(p, o.recipe.digest);
    let off = 0;
    for (let k = 0, n = chunkRefCount(o.recipe.chunks); k < n; k++) {
      const key = chunkRefId(o.recipe.chunks, k).toString('hex');
      if (!index.has(key)) index.set(key, { path: p, offset: off });
      off += chunkRefLen(o.recipe.chunks, k);
    }
  });
  return {
    held: { recipeOf: (p) => recipes.get(p) ?? null, locate: (ids) => ids.map((id) => index.get(id.toString('hex')) ?? null) },
    digests,
    stats,
  };
}

/** A local file chunked ahead, while the agent lists and chunks the remote side. */
interface EarlyChunk {
  file: string;
  outcome: Promise<Awaited<ReturnType<NativeAddon['chunkFiles']>>[number] | null>;
}

/**
 * Pulling onto an existing file (the usual case: a newer checkpoint over the older one) needs that file's chunks.
 * Start on them now, so they are ready when the plan arrives instead of after it. Only unchanged by the
 * time it is used: a file that moved meanwhile is chunked again.
 */
async function chunkEarly(localPath: string, native: NativeAddon): Promise<EarlyChunk | null> {
  const file = path.resolve(localPath);
  const before = await fsp.lstat(file).catch(() => null);
  if (!before?.isFile()) return null;
  const outcome = native
    .chunkFiles(path.dirname(file), [path.basename(file)], null)
    .then(async ([o]) => {
      const after = await fsp.lstat(file).catch(() => null);
      const same = after && after.ino === before.ino && after.size === before.size && after.mtimeMs === before.mtimeMs;
      return o?.recipe && same ? o : null;
    })
    .catch(() => null);
  return { file, outcome };
}

/** Asks for `remotePath` and reads what the agent answers: its state (and lane offer), the plan, its entries. */
async function requestPlan(session: Session, opts: PullOptions): Promise<{ state: PullState; plan: Plan; entries: PlanEntry[] }> {
  const hello = await session.agentHello;
  const wantLanes = !!opts.target.openSocket && !!hello.capabilities?.includes('lanes') && laneCount() > 1;
  const begin: PullBegin = { op: 'pull', path: opts.remotePath, chunkParams: opts.native.defaultChunkParams(), ...(wantLanes ? { lanes: true } : {}) };
  await session.conn.sendJson(Frame.Begin, begin);
  const state = PullState.decode((await expectFrame(session, Frame.State, 'pull')).payload);
  if (state.kind === 'missing') {
    throw new Error(`${opts.target.spec}:${opts.remotePath}: no such file or directory on the remote`);
  }
  const plan = Plan.decode((await expectFrame(session, Frame.Plan, 'pull')).payload);
  const entries: PlanEntry[] = [];
  for (;;) {
    const f = await session.conn.next();
    if (!f) throw new ProtocolError('the agent closed the connection during a pull');
    if (f.type === Frame.PlanEnd) break;
    if (f.type !== Frame.Entries) throw new ProtocolError(`unexpected ${frameName(f.type)} during a pull`);
    entries.push(...decodeEntries(f.payload));
  }
  return { state, plan, entries };
}

/**
 * Where things land: a directory's contents go into `localPath`; a single item becomes `localPath` (its entry
 * renamed to match), or goes inside it when `localPath` is an existing directory. Creates the directory.
 */
async function landingRoot(localPath: string, single: boolean, entries: PlanEntry[]): Promise<string> {
  let root = path.resolve(localPath);
  const localSt = await fsp.stat(root).catch(() => null);
  if (single) {
    if (!localSt?.isDirectory()) {
      const name = Buffer.from(path.basename(root), 'utf8').toString('latin1');
      root = path.dirname(root);
      for (const e of entries) e.path = name;
    }
  } else if (localSt && !localSt.isDirectory()) {
    throw new Error(`${localPath}: exists and is not a directory; the remote path is a directory`);
  }
  await fsp.mkdir(root, { recursive: true });
  return root;
}

/**
 * The entries still to receive. Files whose content is already here only get their mode and mtime fixed, now.
 */
async function settleUnchanged(root: string, entries: PlanEntry[], digests: Map<string, Buffer>, localStats: Map<string, { mode: number; mtimeMs: number }>): Promise<PlanEntry[]> {
  const todo: PlanEntry[] = [];
  for (const e of entries) {
    if (e.kind === 'file' && digests.get(e.path)?.equals(e.digest)) {
      const st = localStats.get(e.path)!;
      const abs = Buffer.concat([Buffer.from(root), Buffer.from('/' + e.path, 'latin1')]);
      if (st.mode !== e.mode) await fsp.chmod(abs, e.mode);
      if (st.mtimeMs !== Math.floor(e.mtimeSec * 1000 + e.mtimeNsec / 1e6)) {
        const t = e.mtimeSec + e.mtimeNsec / 1e9;
        await fsp.utimes(abs, t, t);
      }
      continue;
    }
    todo.push(e);
  }
  return todo;
}

/** What carrying the data took: channels used, bytes read on the lanes, and why lanes could not open. */
interface DataReceived {
  lanes: number;
  laneBytes: number;
  laneError: string | null;
}

/**
 * Feeds the agent's data into `receiver` until DataEnd. With enough data to gain from lanes, they open while the
 * data starts on the main connection; then the agent is told which it may use, and announces the switch itself,
 * at a block boundary.
 */
async function receiveData(session: Session, target: Target, state: PullState, plan: Plan, receiver: Receiver, native: NativeAddon): Promise<DataReceived> {
  const decoder = createBlockDecoder(plan.compression, native);
  const merger = new LaneMerger(receiver.stream, () => createBlockDecoder(plan.compression, native), STREAM_HIGH_WATER);
  const neededBytes = receiver.neededLengths.reduce((a, b) => a + b, 0);
  const offer = state.lanes && 'socket' in state.lanes ? state.lanes : null;
  let opened: OpenLane[] = [];
  let laneError: string | null = null;
  const opening =
    offer && neededBytes >= 2 * LANE_AFTER_BYTES
      ? openLanes(target, offer, laneCount() - 1).then(
          async (lanes) => {
            opened = lanes;
            for (const l of lanes) merger.attach(l.id, l.conn);
            await session.conn.sendJson(Frame.Lanes, { lanes: lanes.map((l) => l.id) } satisfies LanesSwitch);
          },
          (e: Error) => void (laneError = e.message),
        )
      : null;
  try {
    for (;;) {
      const f = await session.conn.next();
      if (!f) throw new ProtocolError('the agent closed the connection during a pull');
      if (f.type === Frame.DataEnd) break;
      if (f.type === Frame.Error) throw remoteError(f.payload);
      if (f.type === Frame.Lanes) {
        merger.switchTo(LanesSwitch.decode(f.payload).lanes);
        continue;
      }
      if (f.type !== Frame.Data) throw new ProtocolError(`unexpected ${frameName(f.type)} during a pull`);
      await merger.main(decoder.decode(f.payload));
    }
    await merger.end();
  } finally {
    merger.close();
    await opening;
    for (const l of opened) l.close();
  }
  return { lanes: merger.laneCount, laneBytes: opened.reduce((a, l) => a + l.conn.bytesRead, 0), laneError };
}

/** Chunks the file entries are made of, whether sent or copied. */
function chunksIn(entries: PlanEntry[]): number {
  return entries.reduce((a, e) => a + (e.kind === 'file' ? e.ops.reduce((b, op) => b + (op.op === 'chunks' ? op.chunks.length / CHUNK_REF_SIZE : op.count), 0) : 0), 0);
}

export async function pull(opts: PullOptions): Promise<PullStats> {
  const t0 = performance.now();
  const native = opts.native;
  const early = chunkEarly(opts.localPath, native);
  const prefs = opts.compression ?? (opts.target.kind === 'local' ? ['none'] : ['zstd', 'deflate', 'none']);
  const session = await openSession(opts.target, prefs);
  const warnings: string[] = [];
  let finished = false;
  try {
    const { state, plan, entries } = await requestPlan(session, opts);
    const root = await landingRoot(opts.localPath, !!plan.single, entries);
    const files = entries.filter((e) => e.kind === 'file').map((e) => e.path);
    const { held, digests, stats: localStats } = await localHeld(root, files, native, plan.single ? await early : null);
    const todo = await settleUnchanged(root, entries, digests, localStats);
    const receiver = new Receiver({
      root,
      chunker: createNativeChunker(native),
      held,
      untrusted: new Set(),
      isPlaced: () => false,
      deleteMode: 'none',
      replaceFile: native.replaceFile,
      native,
    });
    receiver.add(todo, false);
    const need = receiver.resolveNeeds();
    await session.conn.send(Frame.Need, Buffer.concat(need));
    receiver.buildAll();
    const bytesTotal = receiver.neededLengths.reduce((a, b) => a + b, 0);
    const report = (): void => opts.onProgress?.({ bytesDone: receiver.bytesFromStream, bytesTotal });
    report();
    const ticker = opts.onProgress ? setInterval(report, PROGRESS_INTERVAL_MS) : null;
    let data: DataReceived;
    try {
      data = await receiveData(session, opts.target, state, plan, receiver, native);
    } finally {
      if (ticker) clearInterval(ticker);
    }
    report();
    if (data.laneError) warnings.push(`${opts.target.spec}: could not open extra channels (${data.laneError}); the data came over one`);
    const result = await receiver.transition();
    await session.conn.sendJson(Frame.Done, { generation: null, written: result.written, deleted: 0, kept: [], failed: [] });
    finished = true;
    return {
      filesScanned: entries.filter((e) => e.kind !== 'dir').length,
      filesChanged: result.written,
      filesDeleted: 0,
      bytesLiteral: receiver.bytesFromStream,
      bytesWire: session.conn.bytesRead + data.laneBytes,
      lanes: data.lanes,
      chunksReused: Math.max(0, chunksIn(todo) - need.length),
      durationMs: performance.now() - t0,
      transport: opts.target.kind,
      failed: [...(plan.unreadable ?? []), ...result.failed].map((f) => ({ path: displayPath(f.path), error: f.error })),
      warnings,
    };
  } finally {
    await (finished ? session.release() : session.close());
  }
}
