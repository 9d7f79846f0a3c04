// Client sessions as the client's encoders write them, for replay against an agent in process: hello, the begin
// of each operation, the plan, entries, need and data frames, exactly as a push or a pull of the engine sends
// them (data mode and need mode, copies from the same and from another file, deletions, a file mount, a pull).

import type { Chunker, Recipe } from '@skysync/chunking';
import {
  DATA_BLOCK,
  Frame,
  type Begin,
  type ChunkOp,
  type Compression,
  type FrameMessage,
  type Plan,
  type PlanEntry,
  createBlockEncoder,
  encodeEntries,
  encodeFrame,
  makeHello,
  MAGIC,
  type ZstdBinding,
} from '@skysync/protocol';
import type { Rng } from '../../../../test/helpers/random.js';

export interface RecordedSession {
  name: string;
  frames: FrameMessage[];
  /** Replayed onto the destination the `initial` session leaves, rather than onto an empty home. */
  onTemplate: boolean;
}

const params = { minSize: 4096, avgSize: 16384, maxSize: 65536 };
const json = (type: number, value: unknown): FrameMessage => ({ type, payload: Buffer.from(JSON.stringify(value)) });
const empty = (type: number): FrameMessage => ({ type, payload: Buffer.alloc(0) });

/** Text that chunks into several pieces, different for every seed. */
function text(rng: Rng, bytes: number): Buffer {
  const words = ['model', 'train', 'data', 'loss', 'epoch', 'batch', 'import', 'return', 'self', 'config'];
  const out: string[] = [];
  for (let n = 0; n < bytes; ) {
    const line = `${Array.from({ length: 3 + rng.int(8) }, () => rng.pick(words)).join(' ')} = ${rng.int(1e9)}\n`;
    out.push(line);
    n += line.length;
  }
  return Buffer.from(out.join('').slice(0, bytes));
}

interface Content {
  path: string;
  bytes: Buffer;
  recipe: Recipe;
}

/** The literal bytes of `recipe`'s chunks from `first` on, as the data stream carries them. */
function literals(c: Content, first = 0): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  for (let o = 0, i = 0; o < c.recipe.chunks.length; o += 36, i++) {
    const len = c.recipe.chunks.readUInt32LE(o + 32);
    if (i >= first) out.push(c.bytes.subarray(off, off + len));
    off += len;
  }
  return out;
}

function dataFrames(pieces: Buffer[], compression: Compression, zstd: ZstdBinding | null): FrameMessage[] {
  const enc = createBlockEncoder(compression, zstd);
  const joined = Buffer.concat(pieces);
  const out: FrameMessage[] = [];
  for (let o = 0; o < joined.length; o += DATA_BLOCK) out.push({ type: Frame.Data, payload: enc.encode(joined.subarray(o, o + DATA_BLOCK)) });
  out.push(empty(Frame.DataEnd));
  return out;
}

function fileEntry(c: Content, ops: ChunkOp[]): PlanEntry {
  return { kind: 'file', path: c.path, mode: 0o644, size: c.bytes.length, mtimeSec: 1_700_000_000, mtimeNsec: 5, digest: c.recipe.digest, ops };
}

function push(dest: string, plan: Plan, entries: PlanEntry[], data: FrameMessage[], extra: Partial<Begin> = {}): FrameMessage[] {
  const begin = { op: 'push', dest, base: null, chunkParams: params, ...extra };
  return [json(Frame.Begin, begin), json(Frame.Plan, plan), { type: Frame.Entries, payload: encodeEntries(entries) }, empty(Frame.PlanEnd), ...data];
}

/** The sessions, all aimed at `~/dest` in the agent's home (a file mount at `~/dest/single.txt`). */
export function recordSessions(chunker: Chunker, zstd: ZstdBinding | null, rng: Rng): RecordedSession[] {
  const compression: Compression = zstd ? 'zstd' : 'deflate';
  const hello = json(Frame.Hello, makeHello({ role: 'client', software: 'fuzz', compression: [compression, 'none'], native: !!zstd }));
  const content = (p: string, bytes: Buffer): Content => ({ path: p, bytes, recipe: chunker.chunkBuffer(bytes, params) });
  const small = content('src/a.txt', text(rng, 60_000));
  const big = content('src/big.bin', rng.bytes(300_000));
  const none = content('empty', Buffer.alloc(0));
  const base: PlanEntry[] = [
    { kind: 'dir', path: 'src', mode: 0o755 },
    fileEntry(none, []),
    fileEntry(small, [{ op: 'chunks', chunks: small.recipe.chunks }]),
    fileEntry(big, [{ op: 'chunks', chunks: big.recipe.chunks }]),
    { kind: 'symlink', path: 'link', target: 'src/a.txt' },
    // A symlink out of the destination is a user's to make; nothing may be written through it.
    { kind: 'symlink', path: 'up', target: '../../outside' },
  ];
  const dataPlan: Plan = { mode: 'data', compression, deleteMode: 'placed', dryRun: false };
  const initialData = dataFrames([...literals(small), ...literals(big)], compression, zstd);
  const initial = [hello, ...push('~/dest', dataPlan, base, initialData), empty(Frame.End)];

  // An edit in place (the head of the old recipe copied), a copy of another file, a deletion, a path the source
  // could not read, in need mode, with --delete.
  const edited = content('src/a.txt', Buffer.concat([small.bytes, text(rng, 20_000)]));
  let same = 0;
  while (same * 36 < small.recipe.chunks.length - 36 && edited.recipe.chunks.compare(small.recipe.chunks, same * 36, same * 36 + 36, same * 36, same * 36 + 36) === 0) same++;
  const moved = content('src/moved.bin', big.bytes);
  const bigChunks = big.recipe.chunks.length / 36;
  const updateEntries: PlanEntry[] = [
    { kind: 'delete', path: 'empty', forgetOnly: false },
    // What the source could not read: --delete leaves it.
    { kind: 'keep', path: 'link' },
    { kind: 'dir', path: 'src', mode: 0o700 },
    fileEntry(edited, [...(same ? [{ op: 'copy' as const, from: null, start: 0, count: same }] : []), { op: 'chunks', chunks: edited.recipe.chunks.subarray(same * 36) }]),
    fileEntry(moved, [{ op: 'copy', from: 'src/big.bin', start: 0, count: bigChunks }]),
  ];
  const needPlan: Plan = { mode: 'need', compression, deleteMode: 'mirror', dryRun: false };
  const update = [hello, ...push('~/dest', needPlan, updateEntries, dataFrames(literals(edited, same), compression, zstd), { lanes: true })];

  const single = content('single.txt', text(rng, 5_000));
  const fileMount = [
    hello,
    ...push('~/dest/single.txt', dataPlan, [fileEntry(single, [{ op: 'chunks', chunks: single.recipe.chunks }])], dataFrames(literals(single), compression, zstd), {
      file: true,
      relay: true,
    }),
  ];

  // A pull of what the initial push placed: the client asks for every chunk, then says it is done.
  const ids = Buffer.concat([small.recipe.chunks, big.recipe.chunks].flatMap((c) => Array.from({ length: c.length / 36 }, (_, i) => c.subarray(i * 36, i * 36 + 32))));
  const pull = [
    hello,
    json(Frame.Begin, { op: 'pull', path: '~/dest', chunkParams: params }),
    { type: Frame.Need, payload: ids },
    json(Frame.Done, { generation: null, written: 2, deleted: 0, kept: [], failed: [] }),
  ];
  return [
    { name: 'initial', frames: initial, onTemplate: false },
    { name: 'update', frames: update, onTemplate: true },
    { name: 'file-mount', frames: fileMount, onTemplate: false },
    { name: 'pull', frames: pull, onTemplate: true },
  ];
}

/** The bytes a client writes for these frames. */
export function wireBytes(frames: FrameMessage[]): Buffer {
  return Buffer.concat([MAGIC, ...frames.map((f) => encodeFrame(f.type, f.payload))]);
}
