// The agent's side of a push: report the destination's generation and drift, receive the plan and the chunk
// data, stage and transition, record what was placed, answer with the new generation.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { LaneMerger, Receiver, RootGuard, STREAM_HIGH_WATER, processRunning, sweepDeadLeftovers } from '@skysync/apply';
import {
  type BlockDecoder,
  type Connection,
  type Done,
  Frame,
  LanesSwitch,
  type FrameMessage,
  Plan,
  type Notice,
  type PushBegin,
  type PushState,
  type RelayReport,
  ProtocolError,
  trace,
  createBlockDecoder,
  decodeEntries,
  frameName,
} from '@skysync/protocol';
import { resolveRemotePath, type AgentContext } from './context.js';
import { acquireLock } from './lock.js';
import { manifestPath, newGeneration } from './manifest.js';
import { askDestWatch } from './dest-watch.js';
import { openStore, type TreeStore } from './store.js';
import type { PushedPaths } from './sources.js';
import { mirrorExtras } from './mirror.js';
import { PushChunks, RelayServer, fetchFromRelay, relayDisabled } from './relay/index.js';
import { LaneServer, laneServer } from './lanes.js';

/**
 * `mkdir -p` that fails with the real reason: Node's recursive mkdir says ENOENT when a parent is read-only (or
 * otherwise refuses), which reads as a typo in the destination. Each missing component is then made alone.
 */
async function makeDirs(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { recursive: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    const missing: string[] = [];
    for (let d = dir; d !== path.dirname(d); d = path.dirname(d)) {
      try {
        await fsp.lstat(d);
        break;
      } catch {
        missing.unshift(d);
      }
    }
    for (const d of missing) {
      await fsp.mkdir(d).catch((m: NodeJS.ErrnoException) => {
        if (m.code !== 'EEXIST') throw m;
      });
    }
  }
}

/**
 * Serves one push. Returns the frame that followed when it was not a plan (the client had nothing to send and
 * went on to its next operation), or undefined when the push ran to its end.
 */
export async function servePush(conn: Connection, begin: PushBegin, ctx: AgentContext): Promise<FrameMessage | null | undefined> {
  const dest = resolveRemotePath(ctx.home, begin.dest);
  const stateBase = manifestPath(ctx.home, dest).replace(/\.manifest$/, '');
  const lock = await acquireLock(`${stateBase}.lock`, dest, undefined, (pid) => {
    if (!begin.notices) return;
    const notice: Notice = { kind: 'waiting', message: `waiting for another push to ${dest} (pid ${pid}) to finish` };
    conn.sendJson(Frame.Notice, notice).catch(() => {});
  });
  // A single-file destination (a file mount) is a tree of one entry, named as the file, in its parent directory;
  // its record is kept under the file's own path, apart from any other mount in that directory.
  const onlyName = begin.file ? path.basename(dest) : null;
  try {
    const dir = begin.file ? path.dirname(dest) : dest;
    await makeDirs(dir);
    const root = await fsp.realpath(dir);
    const st = await fsp.stat(root);
    if (!st.isDirectory()) throw new ProtocolError(`${dir} is not a directory on the remote`);
    // The last push here died holding the lock (kill -9): its temp files are still around.
    if (lock.tookOver) {
      sweepLeftovers(root, !begin.file, ctx);
      sweepStateTemps(stateBase);
    }
    // A file mount's directory may hold anything (a home): only directory destinations are watched.
    const watch = begin.file ? null : (token: string | null) => askDestWatch(ctx.home, root, token);
    const store = await openStore(ctx.native, stateBase, ctx.log, watch);
    trace('agent: state loaded');
    const drift = await store.drift(root);
    trace('agent: drift checked');
    const untrusted = new Set(drift);
    const state: PushState = { generation: store.generation, drift, dest: root, held: store.size };
    const relayed = begin.relay ? await openRelay(root, store, untrusted, state, ctx) : null;
    const lanes = await expectLanes(begin, state, ctx);
    try {
      return await receivePush(conn, ctx, { dest, root, store, drift, untrusted, relayed, onlyName, state, base: begin.base, lanes: lanes.route });
    } finally {
      lanes.server?.closeExpected();
    }
  } catch (e) {
    await closeRelay(ctx);
    throw e;
  } finally {
    await lock.release();
  }
}

/**
 * Removes the temp files and staging directories that dead skysync processes left in the destination (a file
 * mount's directory: only at its top, where its temps go), by their names' owner (`@skysync/apply` temp-names).
 */
/**
 * The destination's state files are saved through temp files named by their writer's pid (`<base>.<ext>.<pid>.<hex>.tmp`
 * here, `<base>.tmp<pid>` by the addon's tree save): a dead holder of the lock may have left one.
 */
function sweepStateTemps(stateBase: string): void {
  const dir = path.dirname(stateBase);
  const prefix = `${path.basename(stateBase)}.`;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = name.startsWith(prefix) ? /^(?:.*\.(\d+)\.[0-9a-f]{8}\.tmp|tmp(\d+))$/.exec(name.slice(prefix.length)) : null;
    if (m && !processRunning(Number(m[1] ?? m[2]), 0)) fs.rmSync(path.join(dir, name), { force: true });
  }
}

function sweepLeftovers(root: string, recursive: boolean, ctx: AgentContext): void {
  const guard = new RootGuard(root);
  try {
    const n = sweepDeadLeftovers(guard, { recursive, onError: (rel, e) => ctx.log(`could not remove ${rel}: ${e.message}`) });
    trace(`agent: ${n} leftovers of a dead push removed`);
  } finally {
    guard.close();
  }
}

/**
 * The head of a cluster push serves the other nodes' chunks for as long as the client's session stays on this
 * operation (the main loop closes it when the next frame arrives). The offer, or why there is none, goes in `state`.
 */
async function openRelay(root: string, store: TreeStore, untrusted: Set<string>, state: PushState, ctx: AgentContext): Promise<PushChunks | null> {
  if (relayDisabled()) {
    state.relay = { error: 'turned off on that node (SKYSYNC_RELAY)' };
    return null;
  }
  try {
    const relayed = new PushChunks(store.held(untrusted), store.size === 0);
    const server = await RelayServer.open({ root, source: relayed, chunker: ctx.chunker, zstd: ctx.native, log: ctx.log });
    ctx.relay = server;
    state.relay = server.offer();
    return relayed;
  } catch (e) {
    state.relay = { error: (e as Error).message };
    return null;
  }
}

/**
 * Offers lanes when the client asked for them (the offer, or why there is none, goes in `state`). Lanes admitted
 * before the plan arrives wait for the merger the plan creates: `route` hands them, and those admitted later, to it.
 */
async function expectLanes(
  begin: PushBegin,
  state: PushState,
  ctx: AgentContext,
): Promise<{ server: LaneServer | null; route: (attach: (id: number, c: Connection) => void) => void }> {
  const early: Array<[number, Connection]> = [];
  let admitLane = (id: number, c: Connection): void => void early.push([id, c]);
  let lanes: LaneServer | null = null;
  if (begin.lanes) {
    const server = await laneServer(ctx);
    if (server instanceof LaneServer) {
      lanes = server;
      state.lanes = server.expect((id, c) => admitLane(id, c));
    } else state.lanes = server;
  }
  const route = (attach: (id: number, c: Connection) => void): void => {
    for (const [id, c] of early.splice(0)) attach(id, c);
    admitLane = attach;
  };
  return { server: lanes, route };
}

interface PushContext {
  dest: string;
  root: string;
  store: TreeStore;
  drift: string[];
  untrusted: Set<string>;
  relayed: PushChunks | null;
  onlyName: string | null;
  state: PushState;
  /** The generation the client believes the destination is at. */
  base: string | null;
  /** Routes the lanes admitted for this push (those already admitted first) to `attach`. */
  lanes: (attach: (id: number, conn: Connection) => void) => void;
}

/** What receiving one plan's entries and data works with, set up when the plan arrives. */
interface Intake {
  plan: Plan;
  /** What the plan says of its source, for the store's per-source records. */
  pushed: PushedPaths;
  /** Paths the source has but could not read (keep entries): `--delete` leaves them and all below them. */
  unreadable: string[];
  decoder: BlockDecoder;
  /** Written while the files are built; it must land before the first rename. */
  invalidated: Promise<void>;
  receiver: Receiver;
  merger: LaneMerger;
}

async function receivePush(conn: Connection, ctx: AgentContext, p: PushContext): Promise<FrameMessage | null | undefined> {
  await conn.sendJson(Frame.State, p.state);
  const first = await conn.next();
  // Nothing changed on the client's side and no drift: the session ends or goes on to the next operation.
  if (!first || first.type === Frame.Begin || first.type === Frame.End) {
    await closeRelay(ctx);
    await p.store.unchanged(p.drift.length > 0);
    return first?.type === Frame.End ? undefined : first;
  }
  if (first.type !== Frame.Plan) throw new ProtocolError(`expected plan, got ${frameName(first.type)}`);
  const intake = startIntake(Plan.decode(first.payload), ctx, p);
  try {
    const relayReport = await receiveData(conn, ctx, p, intake);
    await finishPush(conn, ctx, p, intake, relayReport);
  } finally {
    // A push that failed midway still lets its "generation unknown" write land before the session ends: left
    // running, it wrote into the state directory after the agent had answered (found by the frame fuzzing, seed
    // 1384274770, as a state temp file appearing after the session).
    await intake.invalidated.catch(() => {});
  }
  return undefined;
}

function startIntake(plan: Plan, ctx: AgentContext, p: PushContext): Intake {
  const { root, store, untrusted, relayed } = p;
  // What the plan says of its source: all of it, unless the client's base is this destination's generation.
  const pushed: PushedPaths = { whole: p.base === null || p.base !== store.generation, claimed: new Set(), deleted: [] };
  if (p.onlyName !== null && plan.deleteMode === 'mirror') throw new ProtocolError('--delete does not apply to a single-file destination');
  // Before the receiver exists: a plan this agent cannot decode leaves nothing to clean up.
  const decoder = createBlockDecoder(plan.compression, ctx.native);
  const invalidated = store.invalidate();
  invalidated.catch(() => {});
  const receiver = new Receiver({
    root,
    chunker: ctx.chunker,
    held: store.held(untrusted),
    untrusted,
    isPlaced: (p) => store.has(p),
    deleteMode: plan.deleteMode,
    replaceFile: ctx.native?.replaceFile,
    native: ctx.native,
    ...(relayed ? { onChunk: (k: string) => relayed.onChunk(k) } : {}),
  });
  relayed?.attach(receiver);
  const merger = new LaneMerger(receiver.stream, () => createBlockDecoder(plan.compression, ctx.native), STREAM_HIGH_WATER);
  p.lanes((id, c) => merger.attach(id, c));
  return { plan, pushed, unreadable: [], decoder, invalidated, receiver, merger };
}

/**
 * The rest of the plan's entries, then its data (on this connection and on any lanes) until the data ends. A
 * failure removes what was staged: nothing was renamed yet, so every destination file stays as it was.
 */
async function receiveData(conn: Connection, ctx: AgentContext, p: PushContext, intake: Intake): Promise<RelayReport | undefined> {
  const { plan, receiver, merger } = intake;
  const dataMode = plan.mode === 'data';
  let relayReport: RelayReport | undefined;
  let planEnded = false;
  let dataEnded = false;
  try {
    while (!dataEnded) {
      const f = await conn.next();
      if (!f) throw new ProtocolError('connection closed in the middle of a push');
      switch (f.type) {
        case Frame.Entries:
          if (planEnded) throw new ProtocolError('entries after the end of the plan');
          addEntries(f.payload, dataMode, p, intake);
          break;
        case Frame.PlanEnd:
          planEnded = true;
          if (!dataMode) relayReport = await sendNeed(conn, ctx, intake);
          break;
        case Frame.Data:
          await merger.main(intake.decoder.decode(f.payload));
          break;
        case Frame.Lanes:
          merger.switchTo(LanesSwitch.decode(f.payload).lanes);
          break;
        case Frame.DataEnd:
          if (!planEnded) throw new ProtocolError('data ended before the plan');
          dataEnded = true;
          trace(`agent: data ended (${receiver.stream.size} bytes not yet taken)`);
          p.relayed?.renamingSoon();
          await merger.end();
          trace(`agent: lanes merged (${receiver.stream.size} bytes not yet taken)`);
          break;
        case Frame.Error:
          throw new ProtocolError('client aborted the push');
        default:
          throw new ProtocolError(`unexpected ${frameName(f.type)} during a push`);
      }
    }
  } catch (e) {
    merger.close();
    await receiver.abort(e as Error);
    throw e;
  }
  merger.close();
  return relayReport;
}

function addEntries(payload: Buffer, dataMode: boolean, p: PushContext, intake: Intake): void {
  const entries = decodeEntries(payload);
  if (p.onlyName !== null && entries.some((e) => e.path !== p.onlyName)) {
    throw new ProtocolError(`a push to the file ${p.dest} may only carry that file`);
  }
  intake.receiver.add(entries, dataMode);
  for (const e of entries) {
    if (e.kind === 'delete') intake.pushed.deleted.push(e.path);
    else intake.pushed.claimed.add(e.path);
    if (e.kind === 'keep') intake.unreadable.push(e.path);
  }
}

/** The plan is complete: says which chunks the client must send, after taking what it can from the head's relay. */
async function sendNeed(conn: Connection, ctx: AgentContext, { plan, receiver }: Intake): Promise<RelayReport | undefined> {
  let relayReport: RelayReport | undefined;
  let need = receiver.resolveNeeds();
  receiver.buildAll();
  if (plan.relay) {
    relayReport = await fetchRelayed(plan, need, receiver, ctx);
    need = need.slice(relayReport.chunks);
  }
  await conn.send(Frame.Need, Buffer.concat(need));
  return relayReport;
}

/** Places what was staged, records it, answers with the new generation and saves the state. */
async function finishPush(conn: Connection, ctx: AgentContext, p: PushContext, intake: Intake, relayReport: RelayReport | undefined): Promise<void> {
  const { root, store, untrusted } = p;
  const { plan, receiver } = intake;
  await intake.invalidated;
  trace('agent: staged');
  const result = await receiver.transition();
  trace('agent: transition done');
  // A path that failed keeps its old record when the old file is still there untouched; a drifted path that
  // failed again is no longer what we placed: forget it rather than trust it.
  const gone = [...result.removed, ...result.forgotten, ...result.failed.filter((f) => untrusted.has(f.path)).map((f) => f.path)];
  store.apply(result.placed, gone);
  const forgotten = new Set(gone);
  store.settleSources(intake.pushed, (path) => result.placed.has(path) && !forgotten.has(path));
  p.relayed?.settle(store.held(untrusted), store.size === 0);
  let mirrored: string[] = [];
  if (plan.deleteMode === 'mirror') {
    if (!ctx.native) {
      result.failed.push({ path: '', error: '--delete needs the native addon on the remote to apply ignore rules; nothing extra was removed' });
    } else {
      mirrored = await mirrorExtras(root, store, ctx.native, result.failed, intake.unreadable);
      // The store may still have held what another source placed; what is gone is no longer placed.
      store.apply(new Map(), mirrored);
    }
  }
  const generation = newGeneration();
  const done: Done = {
    generation,
    written: result.written,
    deleted: result.removed.length - result.kept.length + mirrored.length,
    kept: result.kept,
    failed: result.failed,
    ...(relayReport ? { relay: relayReport } : {}),
  };
  // The answer goes first: the state on disk says "unknown" until the save below lands, and a crash before
  // that only makes the next push compare everything.
  await conn.sendJson(Frame.Done, done);
  try {
    await store.save(generation);
  } catch (e) {
    ctx.log(`could not record this push (${(e as Error).message}); the next push will compare everything`);
  }
}

/** Ends the chunk server the last operation opened, if any: the client has moved on. */
export async function closeRelay(ctx: AgentContext): Promise<void> {
  const r = ctx.relay;
  ctx.relay = null;
  await r?.close();
}

/**
 * Takes the needed chunks from the head's relay, in need order, into the receiver's stream. What it could not get
 * (the head unreachable, gone or lacking a chunk) is asked of the client as usual.
 */
async function fetchRelayed(plan: Plan, need: Buffer[], receiver: Receiver, ctx: AgentContext): Promise<RelayReport> {
  if (relayDisabled()) return { chunks: 0, bytes: 0, address: null, error: 'turned off on this node (SKYSYNC_RELAY)', ms: 0 };
  if (!need.length) return { chunks: 0, bytes: 0, address: null, error: null, ms: 0 };
  return fetchFromRelay(
    plan.relay!,
    need,
    receiver.neededLengths,
    async (bytes) => {
      receiver.stream.push(bytes);
      await receiver.stream.waitBelow(STREAM_HIGH_WATER);
    },
    { chunker: ctx.chunker, zstd: ctx.native },
  );
}
