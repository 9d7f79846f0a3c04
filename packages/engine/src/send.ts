// Sending one node its plan: the entries, then the literal data through the data pump (at once in data mode, or
// the chunks the agent says it lacks in need mode), and the agent's answer.

import { chunkRefCount, chunkRefId, chunkRefLen, type NativeAddon } from '@skysync/chunking';
import { type Compression, Done, Frame, type Hello, type Plan, type PushState, type RelayOffer, chooseCompression, decodeIds, encodeEntries, trace } from '@skysync/protocol';
import { DataPump } from '@skysync/transfer';
import type { Target } from '@skysync/transport';
import { laneCount, openLanes } from './lanes.js';
import { BATCH_ENTRIES, type Made, type NodePlan } from './plan-node.js';
import { readSteps } from './read-steps.js';
import { expectFrame, type Session } from './session.js';
import { PROGRESS_INTERVAL_MS, type PushEvent } from './stats.js';

export interface SendInput {
  source: string;
  /** A single-file source is read at its own path, whatever its remote name. */
  fileName: string | null;
  native: NativeAddon;
  target: Target;
  session: Session;
  remoteState: PushState;
  agentHello: Hello;
  prefs: Compression[];
  deleteMode: Plan['deleteMode'];
  emit: (e: PushEvent) => void;
}

export interface Sent {
  done: Done;
  /** Chunks the agent asked for (need mode); undefined in data mode. */
  needed?: number;
  bytesLiteral: number;
  lanes: number;
  laneBytes: number;
  laneError: string | null;
}

/**
 * Sends the plan and its data; `relay`: a worker that takes its literal chunks from the head (it then answers
 * which it still lacks). `onPlanSent` runs once every entry is on its way (the plan's counts are final then).
 */
export async function sendPlan(o: SendInput, plan: NodePlan, first: Made[], relay: RelayOffer | null, onPlanSent: () => void): Promise<Sent> {
  const conn = o.session.conn;
  const compression = chooseCompression(o.prefs, o.agentHello.compression);
  const mode: Plan['mode'] = plan.dataMode && !relay ? 'data' : 'need';
  const wireBefore = conn.bytesWritten;
  trace(`plan to ${o.target.spec}`);
  await conn.sendJson(Frame.Plan, { mode, compression, deleteMode: o.deleteMode, dryRun: false, ...(relay ? { relay } : {}) } satisfies Plan);
  const pump = new DataPump(conn, compression, o.native, o.source);
  const laneOffer = o.remoteState.lanes && 'socket' in o.remoteState.lanes ? o.remoteState.lanes : null;
  if (laneOffer) pump.offerLanes(() => openLanes(o.target, laneOffer, laneCount() - 1));
  let filesSent = 0;
  // Need mode: the chunks the agent asked for, once it has.
  let neededBytes: number | null = null;
  let lastProgress = 0;
  const progress = (force = false): void => {
    const now = performance.now();
    if (!force && now - lastProgress < PROGRESS_INTERVAL_MS) return;
    lastProgress = now;
    const bytesPlanned = mode === 'data' ? plan.bytesPlanned : (neededBytes ?? 0);
    o.emit({
      type: 'progress',
      bytesLiteral: pump.bytesLiteral,
      bytesPlanned,
      bytesWire: conn.bytesWritten - wireBefore + pump.laneBytesWritten,
      filesSent,
      filesTotal: plan.total,
    });
  };
  // Every node shows up from the start, also one whose data comes from the head's relay.
  progress(true);
  try {
    let needed: number | undefined;
    if (mode === 'data') {
      await sendData(o, pump, plan, first, () => filesSent++, progress);
      onPlanSent();
    } else {
      onPlanSent();
      needed = await sendNeeded(o, pump, plan, first, (bytes) => (neededBytes = bytes), progress);
    }
    await pump.finish();
    trace(`all data handed to ${o.target.spec}'s connection`);
    progress(true);
    const done = Done.decode((await expectFrame(o.session, Frame.Done, `push to ${o.target.spec}`)).payload);
    trace(`done from ${o.target.spec}`);
    return { done, needed, bytesLiteral: pump.bytesLiteral, lanes: pump.laneCount, laneBytes: pump.laneBytesWritten, laneError: pump.laneError };
  } finally {
    await pump.closeLanes();
  }
}

function localPathOf(o: SendInput): (p: string) => string {
  return (p) => (o.fileName === null ? p : '');
}

/** Data mode: each batch of entries as it is made, followed by the literal bytes its files carry. */
async function sendData(o: SendInput, pump: DataPump, plan: NodePlan, first: Made[], fileSent: () => void, progress: () => void): Promise<void> {
  const conn = o.session.conn;
  const localPath = localPathOf(o);
  for (let batch = first; batch.length > 0; batch = await plan.next(true)) {
    await conn.send(Frame.Entries, encodeEntries(batch.map((b) => b.entry)));
    for (const step of readSteps(batch, o.fileName === null ? o.native : null, o.source)) {
      if (step.kind === 'file') {
        for (const l of step.made.literals) {
          await pump.addFromFile(localPath(step.made.entry.path), l.offset, l.len);
          progress();
        }
        fileSent();
        continue;
      }
      // Small files' literal bytes, read together (in parallel, off this thread) while earlier ones travel.
      const bytes = await step.bytes;
      let at = 0;
      for (const m of step.files) {
        for (const l of m.literals) {
          await pump.add(bytes.subarray(at, at + l.len));
          at += l.len;
          progress();
        }
        fileSent();
      }
    }
    progress();
  }
  await conn.send(Frame.PlanEnd, Buffer.alloc(0));
}

/** Need mode: every entry first, then the chunks the agent says it lacks. Returns how many it asked for. */
async function sendNeeded(o: SendInput, pump: DataPump, plan: NodePlan, entries: Made[], planned: (bytes: number) => void, progress: () => void): Promise<number> {
  const conn = o.session.conn;
  const files = entries.filter((b) => b.entry.kind === 'file').map((b) => b.entry.path);
  for (let i = 0; i < entries.length; i += BATCH_ENTRIES) {
    await conn.send(Frame.Entries, encodeEntries(entries.slice(i, i + BATCH_ENTRIES).map((b) => b.entry)));
  }
  await conn.send(Frame.PlanEnd, Buffer.alloc(0));
  // The entries are most of what this node holds in memory, and the answer may take long (a relayed worker
  // answers once the head has given it everything): keep only the file paths, and look the needed chunks up
  // in their recipes once the agent has said which.
  entries.length = 0;
  const need = decodeIds((await expectFrame(o.session, Frame.Need, 'push')).payload);
  const wanted = new Set(need.map((id) => id.toString('latin1')));
  const where = new Map<string, { path: string; offset: number; len: number }>();
  for (let f = 0; f < files.length && where.size < wanted.size; f++) {
    const r = await plan.recipeOf(files[f]!);
    if (!r) continue;
    let off = 0;
    for (let c = 0, n = chunkRefCount(r.chunks); c < n; c++) {
      const k = chunkRefId(r.chunks, c).toString('latin1');
      const len = chunkRefLen(r.chunks, c);
      if (wanted.has(k) && !where.has(k)) where.set(k, { path: files[f]!, offset: off, len });
      off += len;
    }
  }
  const localPath = localPathOf(o);
  planned([...where.values()].reduce((a, l) => a + l.len, 0));
  for (const id of need) {
    const loc = where.get(id.toString('latin1'));
    if (!loc) throw new Error('the agent asked for a chunk this push does not have');
    await pump.addFromFile(localPath(loc.path), loc.offset, loc.len);
    progress();
  }
  return need.length;
}
