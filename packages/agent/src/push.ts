// The agent's side of a push: report the destination's generation and drift, receive the plan and the chunk
// data, stage and transition, record what was placed, answer with the new generation.

import fsp from 'node:fs/promises';
import { Receiver, type HeldChunks } from '@skysync/apply';
import {
  CHUNK_REF_SIZE,
  type Connection,
  type Done,
  Frame,
  type Plan,
  type PushBegin,
  type PushState,
  ProtocolError,
  createBlockDecoder,
  decodeEntries,
  parseJson,
  frameName,
} from '@skysync/protocol';
import { resolveRemotePath, type AgentContext } from './context.js';
import { findDrift } from './drift.js';
import { acquireLock } from './lock.js';
import { loadManifest, manifestPath, newGeneration, saveManifest, type Manifest } from './manifest.js';
import { mirrorExtras } from './mirror.js';

/** Lets the frame reader run ahead of the builder by this much decoded data, then waits. */
const STREAM_HIGH_WATER = 64 * 1024 * 1024;

function heldFrom(m: Manifest, untrusted: Set<string>): HeldChunks {
  let index: Map<string, { path: string; offset: number }> | null = null;
  return {
    recipeOf: (p) => m.entries.get(p)?.chunks ?? null,
    current: (p) => (untrusted.has(p) ? null : (m.entries.get(p) ?? null)),
    locate: (ids) => {
      if (!index) {
        index = new Map();
        for (const [p, r] of m.entries) {
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

export async function servePush(conn: Connection, begin: PushBegin, ctx: AgentContext): Promise<void> {
  const dest = resolveRemotePath(ctx.home, begin.dest);
  const stateFile = manifestPath(ctx.home, dest);
  const release = await acquireLock(`${stateFile}.lock`, dest);
  try {
    await fsp.mkdir(dest, { recursive: true });
    const root = await fsp.realpath(dest);
    const st = await fsp.stat(root);
    if (!st.isDirectory()) throw new ProtocolError(`${dest} is not a directory on the remote`);
    const { manifest, warning } = await loadManifest(stateFile);
    if (warning) ctx.log(warning);
    const drift = manifest.entries.size ? await findDrift(root, manifest.entries) : [];
    const state: PushState = { generation: manifest.generation, drift, dest: root };
    await conn.sendJson(Frame.State, state);

    const first = await conn.next();
    if (!first) return; // Nothing changed on the client's side and no drift: nothing to do.
    if (first.type !== Frame.Plan) throw new ProtocolError(`expected plan, got ${frameName(first.type)}`);
    const plan = parseJson<Plan>(first.payload, 'plan');
    const untrusted = new Set(drift);
    const receiver = new Receiver({
      root,
      chunker: ctx.chunker,
      held: heldFrom(manifest, untrusted),
      untrusted,
      isPlaced: (p) => manifest.entries.has(p),
      deleteMode: plan.deleteMode,
    });
    const decoder = createBlockDecoder(plan.compression, ctx.native);
    const dataMode = plan.mode === 'data';
    let planEnded = false;
    let dataEnded = false;
    while (!dataEnded) {
      const f = await conn.next();
      if (!f) throw new ProtocolError('connection closed in the middle of a push');
      switch (f.type) {
        case Frame.Entries:
          if (planEnded) throw new ProtocolError('entries after the end of the plan');
          receiver.add(decodeEntries(f.payload), dataMode);
          break;
        case Frame.PlanEnd:
          planEnded = true;
          if (!dataMode) {
            const need = receiver.resolveNeeds();
            await conn.send(Frame.Need, Buffer.concat(need));
            receiver.buildAll();
          }
          break;
        case Frame.Data:
          receiver.stream.push(decoder.decode(f.payload));
          await receiver.stream.waitBelow(STREAM_HIGH_WATER);
          break;
        case Frame.DataEnd:
          if (!planEnded) throw new ProtocolError('data ended before the plan');
          dataEnded = true;
          receiver.stream.end();
          break;
        case Frame.Error:
          throw new ProtocolError('client aborted the push');
        default:
          throw new ProtocolError(`unexpected ${frameName(f.type)} during a push`);
      }
    }
    const result = await receiver.transition();
    for (const p of result.removed) manifest.entries.delete(p);
    for (const p of result.forgotten) manifest.entries.delete(p);
    for (const [p, rec] of result.placed) manifest.entries.set(p, rec);
    // A path that failed keeps its old record when the old file is still there untouched.
    // A drifted path that failed again is no longer what we placed: forget it rather than trust it.
    for (const f of result.failed) if (untrusted.has(f.path)) manifest.entries.delete(f.path);
    let mirrored = 0;
    if (plan.deleteMode === 'mirror') {
      if (!ctx.native) {
        result.failed.push({ path: '', error: '--delete needs the native addon on the remote to apply ignore rules; nothing extra was removed' });
      } else {
        mirrored = await mirrorExtras(root, manifest.entries, ctx.native, result.failed);
      }
    }
    manifest.generation = newGeneration();
    await saveManifest(stateFile, manifest);
    const done: Done = {
      generation: manifest.generation,
      written: result.written,
      deleted: result.removed.length - result.kept.length + mirrored,
      kept: result.kept,
      failed: result.failed,
    };
    await conn.sendJson(Frame.Done, done);
  } finally {
    await release();
  }
}
