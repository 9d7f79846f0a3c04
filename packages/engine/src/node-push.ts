// One node of a push: plan it, send it (or only list it, on a dry run), and save what it now holds.

import path from 'node:path';
import type { NativeAddon } from '@skysync/chunking';
import { type Compression, type DeleteMode, type Hello, type PushState, displayPath } from '@skysync/protocol';
import type { Target } from '@skysync/transport';
import { comparePaths } from './order.js';
import { NodePlan, type Made } from './plan-node.js';
import type { Prepared } from './prepare.js';
import { RELAY_MIN_BYTES, type RelayRole } from './relay-role.js';
import { sendPlan, type Sent } from './send.js';
import type { Session } from './session.js';
import { saveState, saveWatch, type SyncState } from './state.js';
import type { PushEvent, PushStats } from './stats.js';

export interface NodePush {
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

export async function pushToNode(o: NodePush): Promise<PushStats> {
  const { prepared, remoteState, deleteMode, relay } = o;
  // The node shows up at once, before its plan is made (a relayed worker waits for the head's first).
  if (!o.dryRun) o.emit({ type: 'progress', bytesLiteral: 0, bytesPlanned: 0, bytesWire: 0, filesSent: 0, filesTotal: 0 });
  // An agent that knows keep entries is told what the source could not read, so `--delete` leaves it.
  const plan = new NodePlan({ ...o, keepUnreadable: deleteMode === 'mirror' && !!o.agentHello.capabilities?.includes('keep') });
  // A worker takes its literal chunks from the head's relay when there are enough of them to matter: deciding
  // that needs the whole plan first. Otherwise data mode streams entries as they are made; need mode and dry runs
  // make the whole plan first.
  const relayCandidate = !relay.head && relay.offer !== null && !o.dryRun && !!o.agentHello.capabilities?.includes('relay');
  const streaming = plan.dataMode && !o.dryRun && !relayCandidate;
  const entries: Made[] = await plan.next(streaming);
  const literalBytes = streaming ? 0 : entries.reduce((a, e) => a + e.literals.reduce((b, l) => b + l.len, 0), 0);
  const viaRelay = relayCandidate && literalBytes >= RELAY_MIN_BYTES;
  relay.decide(viaRelay);

  const stats = startStats(o, plan);
  const conn = o.session.conn;
  const wireBefore = conn.bytesWritten;
  let laneBytes = 0;
  // A head with nothing to change still gets a plan (an empty one) when it serves workers: its chunk server waits
  // for the chunks its own push may bring until that push ends.
  const planNeeded = entries.length > 0 || !plan.baseValid || deleteMode === 'mirror' || (relay.head && relay.offer !== null && !o.dryRun && (await relay.anyUse));
  if (o.dryRun) {
    settleCounts(stats, plan, prepared);
    stats.changes = plan.listed.sort((a, b) => comparePaths(a.path, b.path)).map((l) => ({ ...l, path: displayPath(l.path) }));
    stats.bytesLiteral = literalBytes;
  } else if (planNeeded) {
    const sent = await sendPlan(o, plan, entries, viaRelay ? relay.offer : null, () => settleCounts(stats, plan, prepared));
    laneBytes = sent.laneBytes;
    takeAnswer(o, stats, plan, sent);
    if (sent.done.generation) await save(o, sent.done.generation, sent.done.failed.map((f) => f.path).filter(Boolean));
  } else {
    settleCounts(stats, plan, prepared);
    // A node off the base that turned out to hold this very tree joins the others under its id.
    await settleUnchanged(o, plan.changes.length > 0 || !o.inBase, remoteState.generation);
  }
  stats.bytesWire = conn.bytesWritten - wireBefore + laneBytes;
  stats.durationMs = performance.now() - o.t0;
  return stats;
}

function startStats(o: NodePush, plan: NodePlan): PushStats {
  const { prepared, relay } = o;
  return {
    filesScanned: prepared.files,
    filesChanged: plan.filesChanged,
    filesDeleted: plan.filesDeleted,
    bytesLiteral: 0,
    bytesWire: 0,
    bytesTotal: prepared.bytes,
    chunksReused: plan.chunksReused,
    chunksLiteral: plan.chunksLiteral,
    durationMs: 0,
    scanMs: prepared.scanMs,
    transport: o.target.kind === 'local' ? 'local' : 'ssh',
    generation: o.remoteState.generation,
    drift: [...plan.drift].map(displayPath),
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
}

/** The plan's counts once every entry is made, and what chunking could not read. */
function settleCounts(stats: PushStats, plan: NodePlan, prepared: Prepared): void {
  stats.filesChanged = plan.filesChanged;
  stats.chunksReused = plan.chunksReused;
  stats.chunksLiteral = plan.chunksLiteral;
  for (const unreadable of [prepared.unreadable, prepared.recipes.unreadable]) {
    for (const [p, error] of unreadable) stats.failed.push({ path: displayPath(p), error, inSource: true });
  }
}

/** What the agent answered, and what the data pump did, into the node's statistics. */
function takeAnswer(o: NodePush, stats: PushStats, plan: NodePlan, sent: Sent): void {
  const { done } = sent;
  if (sent.needed !== undefined) {
    stats.chunksReused = Math.max(0, plan.chunksLiteral - sent.needed) + plan.chunksReused;
    stats.chunksLiteral = sent.needed;
  }
  for (const f of done.failed) stats.failed.push({ path: displayPath(f.path), error: f.error });
  stats.kept = done.kept.map(displayPath);
  stats.generation = done.generation;
  stats.bytesLiteral = sent.bytesLiteral;
  stats.lanes = sent.lanes;
  if (sent.laneError) o.emit({ type: 'warning', message: `${o.target.spec}: could not open extra channels (${sent.laneError}); the data went over one` });
  if (done.relay) {
    stats.relay = { role: 'worker', ...done.relay };
    stats.bytesRelay = done.relay.bytes;
    if (done.relay.error) {
      const mib = (sent.bytesLiteral / 1048576).toFixed(1);
      o.emit({ type: 'warning', message: `${o.target.spec}: relay from the head: ${done.relay.error}; ${mib} MiB came from the client instead` });
    }
  }
}

/** Nothing was sent: remember re-checked entries as settled, or at least the watch token that vouches for them. */
async function settleUnchanged(o: NodePush, rechecked: boolean, generation: string | null): Promise<void> {
  const { prepared, state } = o;
  // Only re-checked entries (racy timestamps, metadata the remote does not keep): remember them as settled.
  if (rechecked && generation) await save(o, generation, []);
  else if (prepared.watch && state.tree && state.watch?.token !== prepared.watch.token) {
    // Nothing changed: the token taken before the scan vouches for the saved tree too. When the tree is exactly
    // what the scan found, only the token is rewritten. Otherwise they differ only in what the compare leaves
    // aside (a directory's times, after an ignored file came and went): the scan's tree goes with the token, or
    // every later push would keep asking about an older token, and with none saved yet, scan in full each time.
    if (prepared.tree.sameEntries?.(state.tree)) await saveWatch(o.stDir, prepared.watch).catch(() => {});
    else if (generation) await save(o, generation, []);
  }
}

async function save(o: NodePush, generation: string, failed: string[]): Promise<void> {
  const info = { source: o.source, target: o.target.key, dest: o.dest };
  // Nodes left at the same tree share its id, so the next push scans once against it for all of them.
  await saveState(o.stDir, generation, o.prepared.tree, info, failed.length ? null : o.treeId, o.prepared.watch);
  if (failed.length) await forgetInSaved(o.stDir, o.native, failed);
}

/** A node whose push failed for some paths keeps a tree of its own in which those paths are forgotten. */
async function forgetInSaved(dir: string, native: NativeAddon, paths: string[]): Promise<void> {
  const t = native.Tree.load(path.join(dir, 'tree.snap'));
  for (const p of paths) t.forget(p);
  t.save(path.join(dir, 'tree.snap'));
}
