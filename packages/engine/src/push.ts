// push: scan -> plan -> transfer -> (agent) apply, to one node or many at once. The agents' drift checks run
// while we scan; each node is then planned and sent its data on its own (`node-push.ts`).

import path from 'node:path';
import fsp from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type { NativeAddon } from '@skysync/chunking';
import { type Compression, type DeleteMode, Frame, Notice, type PushBegin, PushState, trace } from '@skysync/protocol';
import type { Target } from '@skysync/transport';
import { laneCount } from './lanes.js';
import { NodeSessions } from './node-sessions.js';
import { pushToNode } from './node-push.js';
import { prepareDir, prepareFile, type Prepared } from './prepare.js';
import { relayOffer, relayWanted, type RelayRole } from './relay-role.js';
import { expectFrame, type Session } from './session.js';
import { loadMeta, loadState, stateDirFor, type SyncState } from './state.js';
import type { PushEvent, PushStats } from './stats.js';
import { deferred } from './util.js';

export interface PushOptions {
  /** A directory (its contents land in `dest`) or a single file (it becomes `dest`). */
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

export interface MultiPushOptions extends Omit<PushOptions, 'target' | 'onEvent'> {
  targets: Target[];
  /**
   * The sessions to push over, one per target, opened and ended by their owner (the caller; by default this push).
   * A node whose session does not open fails alone.
   */
  sessions?: NodeSessions;
  /** `node` is the index into `targets`, or undefined for what concerns the source (the scan). */
  onEvent?: (e: PushEvent, node: number | undefined) => void;
  /**
   * With several targets, the first serves the others' literal chunks over the cluster network, so the client's
   * uplink carries them once (default on; `SKYSYNC_RELAY=0` turns it off).
   */
  relay?: boolean;
}

/** Pushes one source to one target. */
export async function push(opts: PushOptions): Promise<PushStats> {
  const { target, onEvent, ...rest } = opts;
  const [r] = await pushMany({ ...rest, targets: [target], onEvent: onEvent ? (e) => onEvent(e) : undefined });
  if (r instanceof Error) throw r;
  return r!;
}

/**
 * Pushes one source to several targets (the nodes of a cluster): one scan and one chunking pass, then every
 * node in parallel, each with its own state and its own plan. A node's failure is its result, not the others'.
 */
export async function pushMany(opts: MultiPushOptions): Promise<Array<PushStats | Error>> {
  if (opts.sessions) return pushOver(opts, opts.sessions);
  const sessions = new NodeSessions(opts.targets, { compression: opts.compression });
  let results: Array<PushStats | Error> | null = null;
  try {
    results = await pushOver(opts, sessions);
    return results;
  } finally {
    // A push that ran to its end leaves the agent between operations: a warm connection may keep it.
    await sessions.finish((i) => results !== null && !(results[i] instanceof Error));
  }
}

/** A node being pushed to: its session (with the push's `begin` sent) and the state its agent answered. */
interface NodeStart {
  target: Target;
  session: Promise<Session>;
  begun: Promise<Session>;
  remote: Promise<PushState>;
}

/**
 * Warnings of the scan wait until some node answered: the scan runs while the connections are made, and an
 * unreachable host gets its one line alone.
 */
class HeldWarnings {
  readonly all: string[] = [];
  private held: string[] | null = [];
  constructor(private readonly emit: (e: PushEvent, node: number | undefined) => void) {}

  warn = (m: string): void => {
    this.all.push(m);
    if (this.held) this.held.push(m);
    else this.emit({ type: 'warning', message: m }, undefined);
  };

  /** Says what was held (or drops it: no node will take it), and every later warning at once. */
  release(say: boolean): void {
    for (const m of say ? this.held! : []) this.emit({ type: 'warning', message: m }, undefined);
    this.held = null;
  }
}

async function pushOver(opts: MultiPushOptions, sessions: NodeSessions): Promise<Array<PushStats | Error>> {
  const t0 = performance.now();
  const native = opts.native;
  const source = path.resolve(opts.source);
  const dest = opts.dest ?? '~/sky_workdir';
  const targets = opts.targets;
  const emit = opts.onEvent ?? (() => {});
  const warnings = new HeldWarnings(emit);
  const srcStat = await fsp.stat(source);
  // A single file becomes `dest` itself: a tree of one entry, named as the destination.
  const fileName = srcStat.isDirectory() ? null : path.posix.basename(dest.replace(/\/+$/, ''));
  const stDirs = targets.map((t) => stateDirFor('push', t.key, dest, source));
  // The generations first: the agents start their drift checks while the saved trees load.
  const metas = await Promise.all(stDirs.map((d) => loadMeta(d)));
  const begin: PushBegin = { op: 'push', dest, base: null, chunkParams: native.defaultChunkParams(), notices: true, ...(fileName !== null ? { file: true } : {}) };
  const nodes = startNodes(
    opts,
    sessions,
    targets.map((_, i) => ({ ...begin, base: metas[i]?.generation ?? null })),
  );
  // Loading a saved tree blocks this thread for a while: let warm connections send their `begin` first (a cold
  // one takes longer than the load anyway).
  await Promise.race([Promise.allSettled(nodes.map((n) => n.begun)), new Promise((r) => setTimeout(r, 15).unref())]);
  const states = await Promise.all(stDirs.map((d, i) => loadState(d, native, metas[i])));
  for (const s of states) if (s.warning) warnings.warn(s.warning);

  // The scan runs against the tree most nodes were left at.
  const baseIndex = chooseBase(states);
  trace('saved trees loaded');
  const baseState = states[baseIndex];
  const base = baseState?.tree ?? null;
  const prepared: Prepared =
    fileName === null ? await prepareDir(source, base, native, warnings.warn, base ? baseState!.watch : null) : await prepareFile(source, fileName, base, native);
  trace('source scanned');
  // Say what the scan found only when some node can take it: an unreachable host gets its one line alone.
  const reached = await Promise.allSettled(nodes.map((n) => n.remote));
  const anyReached = reached.some((r) => r.status === 'fulfilled');
  warnings.release(anyReached);
  if (anyReached) emit({ type: 'scanned', files: prepared.files, changes: prepared.changes.length }, undefined);
  const offer = relayOffer(reached[0], targets[0]!, warnings.warn);
  const roles = relayRoles(targets.length, offer);
  const baseTreeId = baseState?.treeId ?? null;
  // Nothing changed since the base: a node brought to it now holds the base's tree, and shares its id with the
  // nodes already there (a fresh id would set them apart, and the next push would re-plan one side in full).
  const runTreeId = prepared.changes.length === 0 && baseTreeId ? baseTreeId : randomBytes(8).toString('hex');

  return Promise.all(
    nodes.map(async (node, i): Promise<PushStats | Error> => {
      try {
        const session = await node.session;
        const state = states[i]!;
        return await pushToNode({
          ...opts,
          source,
          dest,
          deleteMode: opts.deleteMode ?? 'placed',
          target: node.target,
          session,
          remoteState: await node.remote,
          agentHello: await session.agentHello,
          state,
          inBase: i === baseIndex || (baseTreeId !== null && state.treeId === baseTreeId),
          prepared,
          prefs: opts.compression ?? sessions.compressionFor(i),
          stDir: stDirs[i]!,
          treeId: runTreeId,
          fileName,
          warnings: [...warnings.all],
          t0,
          emit: (e) => emit(e, i),
          relay: roles[i]!,
        });
      } catch (e) {
        return e instanceof Error ? e : new Error(String(e));
      } finally {
        roles[i]!.decide(false);
      }
    }),
  );
}

/** Asks every node for its state now, so the agents check drift while we scan. */
function startNodes(opts: MultiPushOptions, sessions: NodeSessions, begins: PushBegin[]): NodeStart[] {
  const lanesWanted = !opts.dryRun && laneCount() > 1;
  const relay = relayWanted(opts.targets.length, !!opts.dryRun, opts.relay);
  return opts.targets.map((target, i) => {
    // The first node serves the others. Asked before its hello is known: an agent that cannot (an older one)
    // ignores the flag and offers nothing.
    const lanes = lanesWanted && !!target.openSocket;
    const nodeBegin: PushBegin = { ...begins[i]!, ...(i === 0 && relay ? { relay: true } : {}), ...(lanes ? { lanes: true } : {}) };
    // A session opened now carries the begin in its first bytes; one already open is sent it.
    const { session, carriesBegin } = sessions.acquire(i, nodeBegin);
    const begun = session.then(async (s) => {
      if (!carriesBegin) await s.conn.sendJson(Frame.Begin, nodeBegin);
      return s;
    });
    const remote = begun.then(async (s) => {
      const onNotice = (payload: Buffer): void => opts.onEvent?.({ type: 'notice', message: Notice.decode(payload).message }, i);
      const state = PushState.decode((await expectFrame(s, Frame.State, `push to ${target.spec}`, onNotice)).payload);
      trace(`state from ${target.spec}`);
      return state;
    });
    remote.catch(() => {});
    return { target, session, begun, remote };
  });
}

/** Each node's part in the relay: the first serves (when it offered to), the others decide once planned. */
function relayRoles(count: number, offer: RelayRole['offer']): RelayRole[] {
  const decisions = Array.from({ length: count }, () => deferred<boolean>());
  const anyUse = Promise.all(decisions.slice(1).map((d) => d.promise)).then((d) => d.some(Boolean));
  return decisions.map((d, i) => ({ offer, head: i === 0, decide: (used) => d.resolve(used), anyUse }));
}

/** The state most nodes share (by the tree id saved with it); ties go to the first node. */
export function chooseBase(states: Array<Pick<SyncState, 'tree' | 'treeId'>>): number {
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
