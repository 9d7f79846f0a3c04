// push: scan -> plan -> transfer -> (agent) apply. The agent's drift check runs while we scan.

import path from 'node:path';
import fsp from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type { NativeAddon } from '@skysync/chunking';
import {
  type Compression,
  type DeleteMode,
  Done,
  Frame,
  type Hello,
  type Plan,
  type PlanEntry,
  type PushBegin,
  PushState,
  type RelayOffer,
  type RelayReport,
  chooseCompression,
  decodeIds,
  displayPath,
  encodeEntries,
  trace,
} from '@skysync/protocol';
import { DataPump } from '@skysync/transfer';
import type { Target } from '@skysync/transport';
import { Planner, type LiteralRef } from './plan.js';
import { RecipeQueue, type Recipe, type ToChunk } from './recipes.js';
import { expectFrame, openSession, type Session } from './session.js';
import { loadMeta, loadState, saveState, saveWatch, stateDirFor, type SavedWatch, type SyncState } from './state.js';
import { askWatch, type WatchAnswer } from './watch.js';
import { laneCount, openLanes } from './lanes.js';

export interface PushOptions {
  /** A directory (its contents land in `dest`) or a single file (it becomes `dest`). */
  source: string;
  target: Target;
  /** An open session to reuse (several operations over one connection); it is left open. */
  session?: Session;
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
  /** `watch`: only the directories the watch service named were listed; `full`: every directory was. */
  scan: 'watch' | 'full';
  /** Directories the scan listed. */
  scanDirs: number;
  /** Why the scan was full although watching is on. */
  scanReason?: string;
  changes?: Array<{ status: string; path: string; kind: string }>;
  /** Literal bytes this node took from the head's relay instead of from the client. */
  bytesRelay: number;
  /** A relayed push: the head served the other nodes; a worker says what the relay delivered (`error`: why it
   * stopped short, the rest then came from the client). */
  relay?: { role: 'head'; addresses: string[] } | ({ role: 'worker' } & RelayReport);
  /** Channels that carried chunk data (more than 1: lanes were opened, see docs/PROTOCOL.md). */
  lanes?: number;
}

const BATCH_ENTRIES = 512;

type Tree = InstanceType<NativeAddon['Tree']>;
type Change = Awaited<ReturnType<NativeAddon['scan']>>['changes'][number];

/** Opens a node's session with the push's `begin` in its first bytes (see `openSession`). */
export type SessionOpener = (begin: PushBegin) => Promise<Session>;

export interface MultiPushOptions extends Omit<PushOptions, 'target' | 'session' | 'onEvent'> {
  targets: Target[];
  /**
   * Sessions to use, by node; they are left open. A promise lets the scan run while the connection is still being
   * made; one that rejects fails only its node.
   */
  sessions?: Array<Session | Promise<Session> | SessionOpener | undefined>;
  /** `node` is the index into `targets`, or undefined for what concerns the source (the scan). */
  onEvent?: (e: PushEvent, node: number | undefined) => void;
  /**
   * With several targets, the first serves the others' literal chunks over the cluster network, so the client's
   * uplink carries them once (default on; `SKYSYNC_RELAY=0` turns it off).
   */
  relay?: boolean;
}

/** Below this many literal bytes a worker takes them from the client as usual: the relay's extra round trip over
 * the client's link would cost more than the bytes. */
const RELAY_MIN_BYTES = 2 * 1024 * 1024;

/** How one node of a pushMany takes part in the relay. */
interface RelayRole {
  /** The head's chunk server (null: none, every node is fed by the client). */
  offer: RelayOffer | null;
  head: boolean;
  /** A worker says, once planned, whether it takes its chunks from the relay. */
  decide(used: boolean): void;
  /** The head: whether any worker does (it then needs a plan even with nothing to change, see pushToNode). */
  anyUse: Promise<boolean>;
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** What the one scan and chunking pass of a push produce, shared by every node. */
interface Prepared {
  tree: Tree;
  /** Changes against `base`, the tree most nodes were left at (null: nothing known, everything is added). */
  changes: Change[];
  base: Tree | null;
  /** New recipes of the changed files, cut in travel order while the first ones are already being sent. */
  recipes: RecipeQueue;
  files: number;
  bytes: number;
  scanMs: number;
  scan: 'watch' | 'full';
  scanDirs: number;
  scanReason?: string;
  /** To save with `tree`: the watch token taken before the scan, and what it warned about. */
  watch: SavedWatch | null;
}

function byPath(a: { entry: { path: string } }, b: { entry: { path: string } }): number {
  return a.entry.path < b.entry.path ? -1 : a.entry.path > b.entry.path ? 1 : 0;
}

/** Pushes one source to one target. */
export async function push(opts: PushOptions): Promise<PushStats> {
  const { target, session, onEvent, ...rest } = opts;
  const [r] = await pushMany({ ...rest, targets: [target], sessions: [session], onEvent: onEvent ? (e) => onEvent(e) : undefined });
  if (r instanceof Error) throw r;
  return r!;
}

/**
 * Pushes one source to several targets (the nodes of a cluster): one scan and one chunking pass, then every
 * node in parallel, each with its own state and its own plan. A node's failure is its result, not the others'.
 */
export async function pushMany(opts: MultiPushOptions): Promise<Array<PushStats | Error>> {
  const t0 = performance.now();
  const native = opts.native;
  const source = path.resolve(opts.source);
  const dest = opts.dest ?? '~/sky_workdir';
  const deleteMode = opts.deleteMode ?? 'placed';
  const targets = opts.targets;
  const emit = opts.onEvent ?? (() => {});
  const warnings: string[] = [];
  // What the scan says waits until some node answered: the scan runs while the connections are made, and an
  // unreachable host gets its one line alone.
  let held: string[] | null = [];
  const warn = (m: string): void => {
    warnings.push(m);
    if (held) held.push(m);
    else emit({ type: 'warning', message: m }, undefined);
  };
  const srcStat = await fsp.stat(source);
  // A single file becomes `dest` itself: a tree of one entry, named as the destination.
  const fileName = srcStat.isDirectory() ? null : path.posix.basename(dest.replace(/\/+$/, ''));
  const stDirs = targets.map((t) => stateDirFor('push', t.key, dest, source));
  // The generations first: the agents start their drift checks while the saved trees load.
  const metas = await Promise.all(stDirs.map((d) => loadMeta(d)));
  const prefsFor = (t: Target): Compression[] => opts.compression ?? (t.kind === 'local' ? ['none'] : ['zstd', 'deflate', 'none']);

  // Ask every node for its state now: the agents check drift while we scan.
  const begin: PushBegin = { op: 'push', dest, base: null, chunkParams: native.defaultChunkParams(), ...(fileName !== null ? { file: true } : {}) };
  const lanesWanted = !opts.dryRun && laneCount() > 1;
  const relayWanted = targets.length > 1 && !opts.dryRun && (opts.relay ?? !/^(0|off|false|no)$/i.test(process.env.SKYSYNC_RELAY ?? ''));
  const nodes = targets.map((target, i) => {
    const given = opts.sessions?.[i];
    // The first node serves the others. Asked before its hello is known: an agent that cannot (an older one)
    // ignores the flag and offers nothing.
    const relay = i === 0 && relayWanted;
    const lanes = lanesWanted && !!target.openSocket;
    const nodeBegin: PushBegin = { ...begin, base: metas[i]?.generation ?? null, ...(relay ? { relay: true } : {}), ...(lanes ? { lanes: true } : {}) };
    // A session opened here (or by the caller's opener) carries the begin in its first bytes.
    const withBegin = !given || typeof given === 'function';
    const session = typeof given === 'function' ? given(nodeBegin) : given ? Promise.resolve(given) : openSession(target, prefsFor(target), nodeBegin);
    const begun = session.then(async (s) => {
      if (!withBegin) await s.conn.sendJson(Frame.Begin, nodeBegin);
      return s;
    });
    const remote = begun.then(async (s) => {
      const state = PushState.decode((await expectFrame(s, Frame.State, `push to ${target.spec}`)).payload);
      trace(`state from ${target.spec}`);
      return state;
    });
    session.catch(() => {});
    remote.catch(() => {});
    return { target, session, begun, remote, owned: !given };
  });
  // Loading a saved tree blocks this thread for a while: let warm connections send their `begin` first (a cold
  // one takes longer than the load anyway).
  await Promise.race([Promise.allSettled(nodes.map((n) => n.begun)), new Promise((r) => setTimeout(r, 15).unref())]);
  const states = await Promise.all(stDirs.map((d, i) => loadState(d, native, metas[i])));
  for (const s of states) if (s.warning) warn(s.warning);

  // The scan runs against the tree most nodes were left at.
  const baseIndex = chooseBase(states);
  trace('saved trees loaded');
  let prepared: Prepared;
  try {
    // Warnings found while chunking arrive after the nodes have started: each node's stats get them at its end.
    const warnLater = (m: string): void => emit({ type: 'warning', message: m }, undefined);
    const baseState = states[baseIndex];
    prepared =
      fileName === null
        ? await prepareDir(source, baseState?.tree ?? null, native, warn, warnLater, baseState?.tree ? baseState.watch : null)
        : await prepareFile(source, fileName, baseState?.tree ?? null, native, warn);
  } catch (e) {
    await Promise.all(nodes.map(async (n) => n.owned && (await n.session.catch(() => null))?.close().catch(() => {})));
    throw e;
  }
  trace('source scanned');
  // Say what the scan found only when some node can take it: an unreachable host gets its one line alone.
  const reached = await Promise.allSettled(nodes.map((n) => n.remote));
  const anyReached = reached.some((r) => r.status === 'fulfilled');
  for (const m of anyReached ? held! : []) emit({ type: 'warning', message: m }, undefined);
  held = null;
  if (anyReached) emit({ type: 'scanned', files: prepared.files, changes: prepared.changes.length }, undefined);
  const runTreeId = randomBytes(8).toString('hex');
  const baseTreeId = states[baseIndex]?.treeId ?? null;
  const offer = relayOffer(reached[0], targets[0]!, warn);
  const decisions = targets.map(() => deferred<boolean>());
  const anyUse = Promise.all(decisions.slice(1).map((d) => d.promise)).then((d) => d.some(Boolean));
  const nodeDone = targets.map(() => deferred<void>());

  return Promise.all(
    nodes.map(async (node, i): Promise<PushStats | Error> => {
      let session: Session | null = null;
      let finished = false;
      const relay: RelayRole = { offer, head: i === 0, decide: (u) => decisions[i]!.resolve(u), anyUse };
      try {
        session = await node.session;
        const state = states[i]!;
        const inBase = i === baseIndex || (baseTreeId !== null && state.treeId === baseTreeId);
        const stats = await pushToNode({
          ...opts,
          source,
          dest,
          deleteMode,
          target: node.target,
          session,
          remoteState: await node.remote,
          agentHello: await session.agentHello,
          state,
          inBase,
          prepared,
          prefs: prefsFor(node.target),
          stDir: stDirs[i]!,
          treeId: runTreeId,
          fileName,
          warnings: [...warnings],
          t0,
          emit: (e) => emit(e, i),
          relay,
        });
        finished = true;
        return stats;
      } catch (e) {
        return e instanceof Error ? e : new Error(String(e));
      } finally {
        decisions[i]!.resolve(false);
        nodeDone[i]!.resolve();
        // The head's chunk server lives as long as its session stays on this push: keep it until the others are done.
        if (i === 0 && offer) await Promise.all(nodeDone.slice(1).map((d) => d.promise));
        // A push that ran to its end leaves the agent between operations: a warm connection may keep it.
        if (node.owned && session) await (finished ? session.release() : session.close()).catch(() => {});
      }
    }),
  );
}

/** The head's chunk server, from its state; `SKYSYNC_RELAY_ADDRESSES` (comma-separated) replaces the addresses it
 * found for itself, for networks where the workers know it by another name. */
function relayOffer(state: PromiseSettledResult<PushState> | undefined, head: Target, warn: (m: string) => void): RelayOffer | null {
  const r = state?.status === 'fulfilled' ? state.value.relay : undefined;
  if (!r) return null;
  if (!('token' in r)) {
    warn(`relay: ${head.spec} cannot serve the other nodes (${r.error}); each gets its data from the client`);
    return null;
  }
  const override = (process.env.SKYSYNC_RELAY_ADDRESSES ?? '').split(',').map((a) => a.trim()).filter(Boolean);
  return override.length ? { ...r, addresses: override } : r;
}

/** Files at least this large travel as a stream of their own that the agent reads ahead of its writes. */
const LARGE_FILE = 8 * 1024 * 1024;
/** What one more small file costs the agent, counted in bytes of a large file's stream. */
const SMALL_FILE_COST = 16 * 1024;

/**
 * The order entries travel in: path order, except that small files are spread between the large ones in
 * proportion to their share of the work. The agent builds files in stream order; a run of thousands of small
 * files is paced by its per-file work while the link idles, and a large file by the link while the agent idles.
 * Interleaved, the agent writes small files while the next large one is still arriving. The last large file
 * travels last, after every small one: the agent may be behind by its whole buffer when the data ends, and a
 * large file's backlog drains in a fraction of the time that thousands of small files take.
 */
export function travelOrder<T extends { path: string; size?: number }>(items: T[]): T[] {
  const large = items.filter((x) => (x.size ?? 0) >= LARGE_FILE);
  if (large.length === 0 || large.length === items.length) return items;
  const small = items.filter((x) => (x.size ?? 0) < LARGE_FILE);
  const weight = (x: T): number => (x.size ?? 0) + SMALL_FILE_COST;
  const last = large.pop()!;
  const largeTotal = large.reduce((a, x) => a + x.size!, 0);
  const smallTotal = small.reduce((a, x) => a + weight(x), 0);
  const out: T[] = [];
  let i = 0;
  let j = 0;
  let largeDone = 0;
  let smallDone = 0;
  while (i < large.length || j < small.length) {
    if (j < small.length && (i >= large.length || smallDone * largeTotal <= largeDone * smallTotal)) {
      smallDone += weight(small[j]!);
      out.push(small[j++]!);
    } else {
      largeDone += large[i]!.size!;
      out.push(large[i++]!);
    }
  }
  out.push(last);
  return out;
}

/** The state most nodes share (by the tree id saved with it); ties go to the first node. */
function chooseBase(states: SyncState[]): number {
  const count = new Map<string, number>();
  for (const s of states) if (s.tree && s.treeId) count.set(s.treeId, (count.get(s.treeId) ?? 0) + 1);
  let best = states.findIndex((s) => s.tree !== null);
  let bestCount = 0;
  states.forEach((s, i) => {
    const c = s.tree && s.treeId ? count.get(s.treeId)! : s.tree ? 1 : 0;
    if (c > bestCount) {
      best = i;
      bestCount = c;
    }
  });
  return Math.max(0, best);
}

/** The directory of a relative path ("" for the root's entries). */
function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}

/**
 * What a partial scan lists: what the watch service names, plus what the last scan warned about (unreadable
 * entries, special files, bad ignore files), since a full scan warns about them again every time: those paths
 * are walked whole and their directories listed.
 */
export function rescanOf(answer: { dirs: string[]; subtrees: string[] }, recheck: string[]): { dirs: string[]; subtrees: string[] } {
  return { dirs: [...answer.dirs, ...recheck.map(parentOf)], subtrees: [...answer.subtrees, ...recheck] };
}

/**
 * The scan itself: partial when the watch service vouches for what changed since the token saved with `base`,
 * full otherwise. The token asked for now (before scanning) is saved with the tree this scan produces.
 */
async function scanSource(source: string, base: Tree | null, native: NativeAddon, saved: SavedWatch | null) {
  // An addon from before watching (SKYSYNC_NATIVE_PATH) scans in full.
  const canWatch = typeof native.scanPartial === 'function' && typeof native.Watcher === 'function';
  const answer: WatchAnswer | null = canWatch ? await askWatch(source, saved?.token ?? null) : null;
  trace(`watch service answered: ${answer === null ? 'off' : answer.full ? `full scan (${answer.reason ?? 'no reason'})` : 'partial scan'}`);
  // Without a new token (no service yet, no answer in time, watching off), the one saved with the base still
  // vouches for the new tree: whatever changed after this scan began also changed after it was given.
  const token = answer?.token ?? saved?.token ?? null;
  const watch = token ? { token, recheck: [] as string[] } : null;
  if (answer && base && saved && !answer.full) {
    const { dirs, subtrees } = rescanOf(answer, saved.recheck);
    const scanned = await native.scanPartial(source, base, dirs, subtrees);
    return { scanned, watch, reason: scanned.stats.partial ? undefined : 'the kind of ignore rules changed' };
  }
  // The service's own reason first when it gave no token (starting, overflowed, unreachable): that one says why
  // the next push will scan in full again.
  const reason =
    answer === null ? undefined : !base ? 'no earlier tree' : answer.token === null || saved ? answer.reason : 'no watch token saved with the earlier tree';
  return { scanned: await native.scan(source, base), watch, reason };
}

async function prepareDir(
  source: string,
  base: Tree | null,
  native: NativeAddon,
  warn: (m: string) => void,
  warnLater: (m: string) => void,
  saved: SavedWatch | null,
): Promise<Prepared> {
  const tScan = performance.now();
  const { scanned, watch, reason } = await scanSource(source, base, native, saved);
  const scanMs = performance.now() - tScan;
  if (watch) watch.recheck = scanned.warnings.map((w) => w.path);
  for (const w of scanned.warnings) warn(`${displayPath(w.path) || '.'}: ${w.message}`);
  const tree = scanned.tree;
  // Files whose content must be chunked: new or changed locally. Chunked once, whatever the number of nodes.
  const changed: ToChunk[] = [];
  for (const c of scanned.changes) {
    if (c.status === 'deleted' || c.entry.kind !== 'file') continue;
    changed.push({ path: c.entry.path, size: c.entry.size, hint: c.prevRecipe?.chunks ?? null });
  }
  const recipes = new RecipeQueue(source, travelOrder(changed), native, tree, warnLater);
  return {
    tree,
    changes: scanned.changes,
    base,
    recipes,
    files: scanned.stats.files + scanned.stats.symlinks,
    bytes: scanned.stats.bytes,
    scanMs,
    scan: scanned.stats.partial ? 'watch' : 'full',
    scanDirs: scanned.stats.dirsListed,
    ...(reason && !scanned.stats.partial ? { scanReason: reason } : {}),
    watch,
  };
}

/** A single file as a tree of one entry named `name`; it is chunked only when its size, mtime or mode moved. */
async function prepareFile(source: string, name: string, base: Tree | null, native: NativeAddon, warn: (m: string) => void): Promise<Prepared> {
  const tScan = performance.now();
  const st = await fsp.stat(source, { bigint: true });
  const entry = {
    path: name,
    kind: 'file' as const,
    mode: Number(st.mode & 0o7777n),
    size: Number(st.size),
    mtimeSec: Number(st.mtimeNs / 1_000_000_000n),
    mtimeNsec: Number(st.mtimeNs % 1_000_000_000n),
  };
  const prev = base?.entry(name) ?? null;
  const prevRecipe = base?.recipe(name) ?? null;
  const same =
    prev !== null && prevRecipe !== null && prev.kind === 'file' && prev.size === entry.size && prev.mode === entry.mode && prev.mtimeSec === entry.mtimeSec && prev.mtimeNsec === entry.mtimeNsec;
  const tree = native.Tree.empty(native.defaultChunkParams());
  const results = new Map<string, Recipe | null>();
  let chunks: Buffer | undefined = same ? prevRecipe.chunks : undefined;
  if (!same) {
    const [o] = await native.chunkFiles(path.dirname(source), [path.basename(source)], null, prevRecipe ? [prevRecipe.chunks] : null);
    if (o?.recipe && o.recipe.size === entry.size) {
      chunks = o.recipe.chunks;
      results.set(name, o.recipe);
    } else {
      results.set(name, null);
      warn(`${source}: ${o?.error ?? 'changed while it was read'}; skipped, the remote keeps its copy`);
    }
  }
  tree.update([{ ...entry, observedMtimeNs: '0', ino: '0', ...(chunks ? { chunks } : {}) }], []);
  const unreadable = results.get(name) === null;
  const changes: Change[] = same || unreadable ? [] : [{ status: prev ? 'modified' : 'added', entry, prevKind: prev?.kind, ...(prevRecipe ? { prevRecipe } : {}) }];
  const recipes = RecipeQueue.settled(native, tree, results);
  return { tree, changes, base, recipes, files: 1, bytes: entry.size, scanMs: performance.now() - tScan, scan: 'full', scanDirs: 0, watch: null };
}

interface NodePush {
  source: string;
  dest: string;
  deleteMode: DeleteMode;
  dryRun?: boolean;
  native: NativeAddon;
  target: Target;
  session: Session;
  remoteState: PushState;
  agentHello: Hello;
  state: SyncState;
  /** The node was left at the tree the scan ran against. */
  inBase: boolean;
  prepared: Prepared;
  prefs: Compression[];
  stDir: string;
  treeId: string;
  fileName: string | null;
  warnings: string[];
  t0: number;
  emit: (e: PushEvent) => void;
  relay: RelayRole;
}

async function pushToNode(o: NodePush): Promise<PushStats> {
  const { prepared, remoteState, state, native, emit, deleteMode } = o;
  const tree = prepared.tree;
  const baseValid = o.inBase && state.tree !== null && remoteState.generation !== null && remoteState.generation === state.generation;
  // An agent that holds nothing here (a fresh node) has nothing to find by id: send data without asking.
  const dataMode = baseValid || remoteState.held === 0;
  let changes = prepared.changes;
  if (!baseValid && prepared.base) {
    // The remote is not where the scan's base left it (another client, a lost state, a node that missed a push):
    // describe everything, and let the agent find the chunks it already has. Deletions are what this node was
    // last given and the source no longer has.
    const deleted: Change[] = o.inBase
      ? prepared.changes.filter((c) => c.status === 'deleted')
      : (state.tree?.entries() ?? []).filter((e) => !tree.entry(e.path)).map((entry) => ({ status: 'deleted' as const, entry }));
    changes = tree.entries().map((entry) => ({ status: 'added' as const, entry }));
    changes.push(...deleted);
    changes.sort(byPath);
  }
  const base = baseValid ? prepared.base : null;
  const drift = new Set(baseValid ? remoteState.drift : []);
  const recipeOf = async (p: string): Promise<Recipe | null> => (prepared.recipes.has(p) ? prepared.recipes.recipe(p) : tree.recipe(p));

  const planner = new Planner(base, drift);
  // Files are planned in the order they travel: the first file to use a chunk carries its bytes, and the
  // receiver expects them at that file's place in the stream. Entries are made one after another, as the
  // recipes they need are cut; one that turns out to have nothing to send (unreadable, or only a racy re-check
  // of the same bytes) makes nothing.
  type Made = { entry: PlanEntry; literals: LiteralRef[] };
  const pending: Array<{ path: string; size?: number; make: () => Promise<Made | null> }> = [];
  let chunksReused = 0;
  let chunksLiteral = 0;
  let filesChanged = 0;
  let filesDeleted = 0;
  const listed: Array<{ status: string; path: string; kind: string }> = [];
  const list = (status: string, p: string, kind: string): void => {
    const l = { status, path: p, kind };
    listed.push(l);
    emit({ type: 'change', ...l });
  };
  const seen = new Set<string>();
  const fixed = (entry: PlanEntry, status: string, kind: string, counts: boolean) => async (): Promise<Made> => {
    if (counts) filesChanged++;
    list(status, entry.path, kind);
    return { entry, literals: [] };
  };
  type FileMeta = { path: string; mode: number; size: number; mtimeSec: number; mtimeNsec: number };
  const planned = (e: FileMeta, status: string, prevRecipe: Recipe | null, prevKind: string | undefined) => async (): Promise<Made | null> => {
    const r = await recipeOf(e.path);
    if (!r) return null;
    const prev = prevRecipe && !drift.has(e.path) && baseValid ? prevRecipe : null;
    // Same content, same metadata (a racy re-check, or only ctime moved): nothing to send.
    if (prev && prev.digest.equals(r.digest) && prevKind === 'file') {
      const before = base?.entry(e.path);
      if (before && before.mode === e.mode && before.mtimeSec === e.mtimeSec && before.mtimeNsec === e.mtimeNsec) return null;
    }
    const fp = planner.planFile(e.path, r.chunks, prev?.chunks ?? null);
    chunksReused += fp.reused;
    chunksLiteral += fp.literals.length;
    filesChanged++;
    list(status, e.path, 'file');
    return {
      entry: { kind: 'file' as const, path: e.path, mode: e.mode, size: e.size, mtimeSec: e.mtimeSec, mtimeNsec: e.mtimeNsec, digest: r.digest, ops: fp.ops },
      literals: fp.literals,
    };
  };
  for (const c of changes) {
    const e = c.entry;
    seen.add(e.path);
    if (c.status === 'deleted') {
      pending.push({ path: e.path, make: fixed({ kind: 'delete', path: e.path, forgetOnly: deleteMode === 'none' }, 'deleted', e.kind, false) });
      if (deleteMode !== 'none') filesDeleted++;
    } else if (e.kind === 'dir') {
      pending.push({ path: e.path, make: fixed({ kind: 'dir', path: e.path, mode: e.mode }, c.status, 'dir', false) });
    } else if (e.kind === 'symlink') {
      pending.push({ path: e.path, make: fixed({ kind: 'symlink', path: e.path, target: e.target! }, c.status, 'symlink', true) });
    } else {
      pending.push({ path: e.path, size: e.size, make: planned(e, c.status, c.prevRecipe ?? null, c.prevKind) });
    }
  }
  // Files the remote changed behind our back: the local version wins.
  for (const p of drift) {
    if (seen.has(p)) continue;
    const e = tree.entry(p);
    if (!e) continue;
    if (e.kind === 'symlink') pending.push({ path: p, make: fixed({ kind: 'symlink', path: p, target: e.target! }, 'drifted', 'symlink', true) });
    else if (e.kind === 'file') pending.push({ path: p, size: e.size, make: planned(e, 'drifted', null, undefined) });
  }
  pending.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const ordered = travelOrder(pending);
  /**
   * Makes the next entries of `ordered`: all of them, or (streaming) up to `BATCH_ENTRIES` and no further than
   * the first one whose recipe is still being cut once some are made: those travel now rather than wait.
   */
  let cursor = 0;
  const makeSome = async (streaming: boolean): Promise<Made[]> => {
    const out: Made[] = [];
    while (cursor < ordered.length && (!streaming || out.length < BATCH_ENTRIES)) {
      if (streaming && out.length > 0 && !prepared.recipes.ready(ordered[cursor]!.path)) break;
      const m = await ordered[cursor++]!.make();
      if (m) out.push(m);
    }
    return out;
  };
  // A worker takes its literal chunks from the head's relay when there are enough of them to matter: deciding
  // that needs the whole plan first. Otherwise data mode streams entries as they are made; need mode and dry runs
  // make the whole plan first.
  const relay = o.relay;
  const relayCandidate = !relay.head && relay.offer !== null && !o.dryRun && !!o.agentHello.capabilities?.includes('relay');
  const streaming = dataMode && !o.dryRun && !relayCandidate;
  const entries: Made[] = await makeSome(streaming);
  const literalBytes = streaming ? 0 : entries.reduce((a, e) => a + e.literals.reduce((b, l) => b + l.len, 0), 0);
  const viaRelay = relayCandidate && literalBytes >= RELAY_MIN_BYTES;
  relay.decide(viaRelay);

  const stats: PushStats = {
    filesScanned: prepared.files,
    filesChanged,
    filesDeleted,
    bytesLiteral: 0,
    bytesWire: 0,
    bytesTotal: prepared.bytes,
    chunksReused,
    chunksLiteral,
    durationMs: 0,
    scanMs: prepared.scanMs,
    transport: o.target.kind === 'local' ? 'local' : 'ssh',
    generation: remoteState.generation,
    drift: [...drift].map(displayPath),
    kept: [],
    failed: [],
    warnings: o.warnings,
    dryRun: !!o.dryRun,
    scan: prepared.scan,
    scanDirs: prepared.scanDirs,
    ...(prepared.scanReason ? { scanReason: prepared.scanReason } : {}),
    bytesRelay: 0,
    ...(relay.head && relay.offer ? { relay: { role: 'head' as const, addresses: relay.offer.addresses } } : {}),
  };
  const session = o.session;
  const conn = session.conn;
  const wireBefore = conn.bytesWritten;
  let lanesWire = 0;
  const finishStats = (): void => {
    stats.filesChanged = filesChanged;
    stats.chunksReused = chunksReused;
    stats.chunksLiteral = chunksLiteral;
    for (const p of prepared.recipes.unreadable) stats.failed.push({ path: displayPath(p), error: 'unreadable' });
    stats.warnings.push(...prepared.recipes.warnings);
  };
  const save = async (generation: string, failed: string[]): Promise<void> => {
    const info = { source: o.source, target: o.target.key, dest: o.dest };
    // Nodes left at the same tree share its id, so the next push scans once against it for all of them.
    await saveState(o.stDir, generation, tree, info, failed.length ? null : o.treeId, prepared.watch);
    if (failed.length) await forgetInSaved(o.stDir, native, failed);
  };
  // A head with nothing to change still gets a plan (an empty one) when it serves workers: its chunk server waits
  // for the chunks its own push may bring until that push ends.
  const planNeeded = entries.length > 0 || !baseValid || deleteMode === 'mirror' || (relay.head && relay.offer !== null && !o.dryRun && (await relay.anyUse));
  if (o.dryRun) {
    finishStats();
    stats.changes = listed.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)).map((l) => ({ ...l, path: displayPath(l.path) }));
    stats.bytesLiteral = literalBytes;
  } else if (planNeeded) {
    const compression = chooseCompression(o.prefs, o.agentHello.compression);
    // Relayed, a worker answers which chunks it still lacks once the relay has delivered what it could.
    const mode: Plan['mode'] = dataMode && !viaRelay ? 'data' : 'need';
    const plan: Plan = { mode, compression, deleteMode, dryRun: false, ...(viaRelay ? { relay: relay.offer! } : {}) };
    trace(`plan to ${o.target.spec}`);
    await conn.sendJson(Frame.Plan, plan);
    const pump = new DataPump(conn, compression, native, o.fileName === null ? o.source : o.source);
    const laneOffer = remoteState.lanes && 'socket' in remoteState.lanes ? remoteState.lanes : null;
    if (laneOffer) pump.offerLanes(() => openLanes(o.target, laneOffer, laneCount() - 1));
    try {
      // A single-file source is read at its own path, whatever its remote name.
      const localPath = (p: string): string => (o.fileName === null ? p : '');
      let filesSent = 0;
      const progress = (): void =>
        emit({ type: 'progress', bytesLiteral: pump.bytesLiteral, bytesWire: conn.bytesWritten - wireBefore + pump.laneBytesWritten, filesSent, filesTotal: ordered.length });
      if (mode === 'data') {
        for (let batch = entries; batch.length > 0; batch = await makeSome(true)) {
          await conn.send(Frame.Entries, encodeEntries(batch.map((b) => b.entry)));
          for (const step of readSteps(batch, o.fileName === null ? native : null, o.source)) {
            if (step.kind === 'file') {
              for (const l of step.made.literals) await pump.addFromFile(localPath(step.made.entry.path), l.offset, l.len);
              filesSent++;
              continue;
            }
            // Small files' literal bytes, read together (in parallel, off this thread) while earlier ones travel.
            const bytes = await step.bytes;
            let at = 0;
            for (const m of step.files) {
              for (const l of m.literals) {
                await pump.add(bytes.subarray(at, at + l.len));
                at += l.len;
              }
              filesSent++;
            }
          }
          progress();
        }
        await conn.send(Frame.PlanEnd, Buffer.alloc(0));
        finishStats();
      } else {
        finishStats();
        const files = entries.filter((b) => b.entry.kind === 'file').map((b) => b.entry.path);
        for (let i = 0; i < entries.length; i += BATCH_ENTRIES) {
          await conn.send(Frame.Entries, encodeEntries(entries.slice(i, i + BATCH_ENTRIES).map((b) => b.entry)));
        }
        await conn.send(Frame.PlanEnd, Buffer.alloc(0));
        // The entries are most of what this node holds in memory, and the answer may take long (a relayed worker
        // answers once the head has given it everything): keep only the file paths, and look the needed chunks up
        // in their recipes once the agent has said which.
        entries.length = 0;
        const need = decodeIds((await expectFrame(session, Frame.Need, 'push')).payload);
        const wanted = new Set(need.map((id) => id.toString('latin1')));
        const where = new Map<string, { path: string; offset: number; len: number }>();
        for (let f = 0; f < files.length && where.size < wanted.size; f++) {
          const r = await recipeOf(files[f]!);
          if (!r) continue;
          let off = 0;
          for (let c = 0; c < r.chunks.length; c += 36) {
            const k = r.chunks.toString('latin1', c, c + 32);
            const len = r.chunks.readUInt32LE(c + 32);
            if (wanted.has(k) && !where.has(k)) where.set(k, { path: files[f]!, offset: off, len });
            off += len;
          }
        }
        for (const id of need) {
          const loc = where.get(id.toString('latin1'));
          if (!loc) throw new Error('the agent asked for a chunk this push does not have');
          await pump.addFromFile(localPath(loc.path), loc.offset, loc.len);
        }
        stats.chunksReused = Math.max(0, chunksLiteral - need.length) + chunksReused;
        stats.chunksLiteral = need.length;
      }
      await pump.finish();
      trace(`all data handed to ${o.target.spec}'s connection`);
      progress();
      const done = Done.decode((await expectFrame(session, Frame.Done, `push to ${o.target.spec}`)).payload);
      trace(`done from ${o.target.spec}`);
      for (const f of done.failed) stats.failed.push({ path: displayPath(f.path), error: f.error });
      stats.kept = done.kept.map(displayPath);
      stats.generation = done.generation;
      stats.bytesLiteral = pump.bytesLiteral;
      stats.lanes = pump.laneCount;
      if (pump.laneError) o.emit({ type: 'warning', message: `${o.target.spec}: could not open extra channels (${pump.laneError}); the data went over one` });
      if (done.relay) {
        stats.relay = { role: 'worker', ...done.relay };
        stats.bytesRelay = done.relay.bytes;
        if (done.relay.error) {
          const mib = (pump.bytesLiteral / 1048576).toFixed(1);
          o.emit({ type: 'warning', message: `${o.target.spec}: relay from the head: ${done.relay.error}; ${mib} MiB came from the client instead` });
        }
      }
      if (done.generation) await save(done.generation, done.failed.map((f) => f.path).filter(Boolean));
    } finally {
      lanesWire = pump.laneBytesWritten;
      await pump.closeLanes();
    }
  } else {
    finishStats();
    // Only re-checked entries (racy timestamps, metadata the remote does not keep): remember them as settled.
    if (changes.length > 0 && remoteState.generation) await save(remoteState.generation, []);
    else if (prepared.watch && state.tree && state.watch?.token !== prepared.watch.token) {
      // Nothing changed: the token taken before the scan vouches for the saved tree too. When the tree is exactly
      // what the scan found, only the token is rewritten. Otherwise they differ only in what the compare leaves
      // aside (a directory's times, after an ignored file came and went): the scan's tree goes with the token, or
      // every later push would keep asking about an older token, and with none saved yet, scan in full each time.
      if (tree.sameEntries?.(state.tree)) await saveWatch(o.stDir, prepared.watch).catch(() => {});
      else if (remoteState.generation) await save(remoteState.generation, []);
    }
  }
  stats.bytesWire = conn.bytesWritten - wireBefore + lanesWire;
  stats.durationMs = performance.now() - o.t0;
  return stats;
}

/** Files up to this size have their literal bytes read in batches by the addon. */
const SMALL_READ = 256 * 1024;
/** Bytes per batched read, and batches read ahead of the one being sent. */
const READ_GROUP_BYTES = 8 * 1024 * 1024;
const READS_AHEAD = 2;

type ReadStep<M> = { kind: 'file'; made: M } | { kind: 'group'; files: M[]; bytes: Promise<Buffer> };

/**
 * The order in which a batch's literal bytes are read: large files one by one (sequential reads of a big file
 * are cheap), runs of small files as one native read each, started up to `READS_AHEAD` groups ahead.
 */
function* readSteps<M extends { entry: PlanEntry; literals: LiteralRef[] }>(batch: M[], native: NativeAddon | null, root: string): Generator<ReadStep<M>> {
  if (!native || typeof native.readRanges !== 'function') {
    for (const made of batch) yield { kind: 'file', made };
    return;
  }
  const small = (m: M): boolean => m.entry.kind === 'file' && m.entry.size <= SMALL_READ && m.literals.length > 0;
  // Plan the steps first, so reads can start ahead of the one being consumed.
  type Planned = { kind: 'file'; made: M } | { kind: 'group'; files: M[]; size: number };
  const planned: Planned[] = [];
  for (const m of batch) {
    if (!small(m)) {
      planned.push({ kind: 'file', made: m });
      continue;
    }
    const size = m.literals.reduce((a, l) => a + l.len, 0);
    const last = planned[planned.length - 1];
    if (last?.kind === 'group' && last.size + size <= READ_GROUP_BYTES) {
      last.files.push(m);
      last.size += size;
    } else planned.push({ kind: 'group', files: [m], size });
  }
  const reads = new Map<number, Promise<Buffer>>();
  const start = (i: number): void => {
    const g = planned[i];
    if (!g || g.kind !== 'group' || reads.has(i)) return;
    const paths: string[] = [];
    const ranges = Buffer.alloc(12 * g.files.reduce((a, m) => a + m.literals.length, 0));
    let k = 0;
    for (const m of g.files) {
      for (const l of m.literals) {
        paths.push(m.entry.path);
        // Offsets stay below 2^53: two 32-bit halves, no BigInt per range.
        ranges.writeUInt32LE(l.offset % 0x1_0000_0000, k * 12);
        ranges.writeUInt32LE(Math.floor(l.offset / 0x1_0000_0000), k * 12 + 4);
        ranges.writeUInt32LE(l.len, k * 12 + 8);
        k++;
      }
    }
    const p = native.readRanges(root, paths.join('\0'), ranges).catch((e: Error) => {
      throw new Error(`${e.message}; push again`);
    });
    p.catch(() => {});
    reads.set(i, p);
  };
  const groups = planned.flatMap((g, i) => (g.kind === 'group' ? [i] : []));
  for (let i = 0; i < planned.length; i++) {
    const g = planned[i]!;
    if (g.kind === 'file') {
      yield g;
      continue;
    }
    const at = groups.indexOf(i);
    for (let j = at; j < Math.min(groups.length, at + 1 + READS_AHEAD); j++) start(groups[j]!);
    yield { kind: 'group', files: g.files, bytes: reads.get(i)! };
    reads.delete(i);
  }
}

/** A node whose push failed for some paths keeps a tree of its own in which those paths are forgotten. */
async function forgetInSaved(dir: string, native: NativeAddon, paths: string[]): Promise<void> {
  const t = native.Tree.load(path.join(dir, 'tree.snap'));
  for (const p of paths) t.forget(p);
  t.save(path.join(dir, 'tree.snap'));
}

/** Checks the source before anything else, so a typo gives one clear line. */
export async function checkSource(dir: string): Promise<void> {
  const st = await fsp.stat(dir).catch(() => null);
  if (!st) throw new Error(`${dir}: no such directory; pass --workdir DIR or run from your project`);
  if (!st.isDirectory()) throw new Error(`${dir}: not a directory; the workdir must be a directory`);
}
