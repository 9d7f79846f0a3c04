// Mutations of recorded sessions, as a hostile or broken client would send them: bit flips, truncation, splices
// of another session, wrong frame lengths and types, JSON fields of the wrong type, plan entries with wrong
// paths, sizes and chunk lengths, duplicated, dropped and reordered frames.

import { ByteWriter, Frame, type FrameMessage, MAX_FRAME, decodeEntries, encodeEntries, type PlanEntry } from '@skysync/protocol';
import type { Rng } from '../../../../test/helpers/random.js';
import { type RecordedSession, wireBytes } from './sessions.js';

/** A mutated session: the frames, then what is done to their bytes (a wrong length, a cut). */
export interface MutatedSession {
  from: string;
  mutations: string[];
  frames: FrameMessage[];
  bytes: Buffer;
}

const JSON_FRAMES = new Set<number>([Frame.Hello, Frame.Begin, Frame.Plan, Frame.Lanes, Frame.Done, Frame.Error]);

/** Values of the wrong type (or the right type and a hostile value) for a JSON field. */
const HOSTILE: unknown[] = [null, 0, -1, 1.5, 2 ** 53, 1e308, '', 'x', 'A'.repeat(5000), [], [1, 'a', null], {}, { length: 3 }, true, false, ['zstd'], 'zstd'];

function pickFrame(frames: FrameMessage[], rng: Rng, ok: (f: FrameMessage) => boolean = () => true): number {
  const candidates = frames.map((f, i) => (ok(f) ? i : -1)).filter((i) => i >= 0);
  return candidates.length ? rng.pick(candidates) : -1;
}

function flipBits(frames: FrameMessage[], rng: Rng): string {
  const i = pickFrame(frames, rng, (f) => f.payload.length > 0);
  if (i < 0) return 'flip (none)';
  const payload = Buffer.from(frames[i]!.payload);
  const n = 1 + rng.int(4);
  for (let k = 0; k < n; k++) payload[rng.int(payload.length)]! ^= 1 << rng.int(8);
  frames[i] = { type: frames[i]!.type, payload };
  return `flip ${n} bits in frame ${i}`;
}

/** Every place in a JSON value where a field or an element sits, as a path of keys. */
function slots(v: unknown, at: Array<string | number> = [], out: Array<Array<string | number>> = []): Array<Array<string | number>> {
  const entries: Array<[string | number, unknown]> = Array.isArray(v) ? v.map((x, i) => [i, x]) : v && typeof v === 'object' ? Object.entries(v) : [];
  for (const [k, x] of entries) {
    out.push([...at, k]);
    slots(x, [...at, k], out);
  }
  return out;
}

function jsonField(frames: FrameMessage[], rng: Rng): string {
  const i = pickFrame(frames, rng, (f) => JSON_FRAMES.has(f.type));
  if (i < 0) return 'json (none)';
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(frames[i]!.payload.toString()) as Record<string, unknown>;
  } catch {
    return 'json (already broken)';
  }
  const places = slots(value);
  if (!places.length) return 'json (no field)';
  const place = rng.pick(places);
  let parent = value as Record<string | number, unknown>;
  for (const k of place.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
  const key = place[place.length - 1]!;
  const replacement = rng.chance(0.15) ? undefined : rng.pick(HOSTILE);
  // A destination is the client's to name: only values that stay in the agent's home are tried there.
  if ((key === 'dest' || key === 'path') && typeof replacement === 'string' && replacement.length < 100) return 'json (kept dest)';
  if (replacement === undefined) delete parent[key];
  else parent[key] = replacement;
  frames[i] = { type: frames[i]!.type, payload: Buffer.from(JSON.stringify(value)) };
  return `json frame ${i}: ${place.join('.')} = ${JSON.stringify(replacement)?.slice(0, 20)}`;
}

/** A plan entry with a field out of its range: a path that climbs, a size or chunk length that lies, a bad mode. */
function entryField(frames: FrameMessage[], rng: Rng): string {
  const i = pickFrame(frames, rng, (f) => f.type === Frame.Entries);
  if (i < 0) return 'entry (none)';
  let entries: PlanEntry[];
  try {
    entries = decodeEntries(frames[i]!.payload);
  } catch {
    return 'entry (already broken)';
  }
  if (!entries.length) return 'entry (empty)';
  const e = rng.pick(entries) as PlanEntry & Record<string, unknown>;
  const what = rng.int(8);
  if (what === 0) e.path = rng.pick(['../escape', 'a/../../b', '/abs', 'up/inside', 'link/x', 'src//x', '.']);
  else if (what === 1 && e.kind === 'file') e.size = rng.pick([0, 1, e.size + 1, e.size - 1, 2 ** 40]);
  else if (what === 2 && e.kind === 'file') e.digest = Buffer.alloc(32, rng.int(256));
  else if (what === 3 && e.kind === 'file') {
    for (const op of e.ops) {
      if (op.op !== 'chunks') continue;
      op.chunks = Buffer.from(op.chunks);
      const at = 36 * rng.int(op.chunks.length / 36) + 32;
      op.chunks.writeUInt32LE(rng.pick([1, op.chunks.readUInt32LE(at) + 1, op.chunks.readUInt32LE(at) - 1, 70_000]), at);
    }
  } else if (what === 4 && e.kind === 'file') e.ops = [{ op: 'copy', from: rng.pick([null, 'src/big.bin', 'nope']), start: rng.int(100), count: 1 + rng.int(100) }];
  else if (what === 5 && e.kind === 'symlink') e.target = rng.pick(['/etc', '../../..', 'x'.repeat(5000)]);
  else if (what === 6) entries.push({ ...e, path: e.path } as PlanEntry);
  else entries.reverse();
  let payload: Buffer;
  try {
    payload = encodeEntries(entries);
  } catch {
    return 'entry (unencodable)';
  }
  frames[i] = { type: Frame.Entries, payload };
  return `entry field ${what} in frame ${i}`;
}

/** An entries frame of the first entry kind, a path and then random bytes: the tail is any field's value. */
function entryNoise(frames: FrameMessage[], rng: Rng): string {
  const w = new ByteWriter();
  w.varint(1)
    .u8(1 + rng.int(4))
    .path('src/x')
    .bytes(rng.bytes(rng.int(80)));
  frames.splice(rng.int(frames.length + 1), 0, { type: Frame.Entries, payload: w.finish() });
  return 'entry noise';
}

function wrongType(frames: FrameMessage[], rng: Rng): string {
  const i = rng.int(frames.length);
  const type = rng.int(20);
  frames[i] = { type, payload: frames[i]!.payload };
  return `frame ${i} type ${type}`;
}

function duplicate(frames: FrameMessage[], rng: Rng): string {
  const i = rng.int(frames.length);
  const j = rng.int(frames.length + 1);
  frames.splice(j, 0, frames[i]!);
  return `duplicate ${i} at ${j}`;
}

function reorder(frames: FrameMessage[], rng: Rng): string {
  const i = rng.int(frames.length);
  const j = rng.int(frames.length);
  [frames[i], frames[j]] = [frames[j]!, frames[i]!];
  return `swap ${i} ${j}`;
}

function drop(frames: FrameMessage[], rng: Rng): string {
  const i = 1 + rng.int(Math.max(1, frames.length - 1));
  frames.splice(i, 1);
  return `drop ${i}`;
}

const FRAME_MUTATIONS = [flipBits, jsonField, jsonField, entryField, entryField, entryNoise, wrongType, duplicate, reorder, drop];

/** Mutates one of `sessions` (1 to 3 changes), maybe splicing in another's frames, and maybe breaking its bytes. */
export function mutate(sessions: RecordedSession[], rng: Rng): MutatedSession & { session: RecordedSession } {
  const session = rng.pick(sessions);
  const frames = session.frames.slice();
  const mutations: string[] = [];
  if (rng.chance(0.1)) {
    const other = rng.pick(sessions).frames;
    const at = rng.int(frames.length);
    const from = rng.int(other.length);
    frames.splice(at, rng.int(frames.length - at + 1), ...other.slice(from, from + 1 + rng.int(other.length - from)));
    mutations.push(`splice at ${at}`);
  }
  for (let n = 1 + rng.int(3); n > 0; n--) mutations.push(rng.pick(FRAME_MUTATIONS)(frames, rng));
  let bytes = wireBytes(frames);
  if (rng.chance(0.1)) {
    // A frame header's length made wrong: shorter, longer, zero or past the limit.
    let pos = 10;
    const k = rng.int(frames.length);
    for (let i = 0; i < k; i++) pos += 5 + frames[i]!.payload.length;
    if (pos + 4 <= bytes.length) {
      const len = bytes.readUInt32LE(pos);
      const wrong = rng.pick([0, 1, len - 1, len + 1, len + 1000, MAX_FRAME, MAX_FRAME + 1, 0xffffffff]) >>> 0;
      bytes = Buffer.from(bytes);
      bytes.writeUInt32LE(wrong, pos);
      mutations.push(`length of frame ${k}: ${wrong}`);
    }
  }
  if (rng.chance(0.1)) {
    const cut = rng.int(bytes.length);
    bytes = bytes.subarray(0, cut);
    mutations.push(`cut at byte ${cut}`);
  }
  return { session, from: session.name, mutations, frames, bytes };
}
