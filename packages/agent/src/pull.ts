// The agent's side of a pull: list the remote item, chunk its files, send the plan with full recipes, then
// send only the chunks the client says it lacks.

import fsp from 'node:fs/promises';
import path from 'node:path';
import { chunkRefCount, chunkRefId, chunkRefLen } from '@skysync/chunking';
import {
  type Connection,
  Frame,
  LanesSwitch,
  type Hello,
  type PlanEntry,
  type PullBegin,
  type PullState,
  type Plan,
  chooseCompression,
  decodeIds,
  encodeEntries,
  ProtocolError,
  supportedCompressions,
} from '@skysync/protocol';
import { DataPump, type OpenLane } from '@skysync/transfer';
import { LaneServer, laneServer } from './lanes.js';
import { resolveRemotePath, type AgentContext } from './context.js';
import { statFields, walkTree, type WalkEntry } from './walk.js';
import { manifestPath } from './manifest.js';

/**
 * The recipe recorded for `abs` by the push that placed it (the nearest destination above it that has a record),
 * or null. Only a hint: the file is chunked anyway, faster where it still matches.
 */
async function recordedRecipe(ctx: AgentContext, abs: string): Promise<Buffer | null> {
  if (!ctx.native) return null;
  for (let dir = abs; ; dir = path.dirname(dir)) {
    const tree = `${manifestPath(ctx.home, dir).replace(/\.manifest$/, '')}.tree`;
    if (
      await fsp.stat(tree).then(
        () => true,
        () => false,
      )
    ) {
      try {
        const rel = dir === abs ? path.basename(abs) : path.relative(dir, abs);
        return ctx.native.Tree.load(tree).recipe(Buffer.from(rel, 'utf8').toString('latin1'))?.chunks ?? null;
      } catch {
        return null;
      }
    }
    if (dir === path.dirname(dir)) return null;
  }
}

const BATCH = 512;

/** The reason without the path (the client names the file) and without errno's repeated text. */
function readError(message: string | undefined): string {
  const m = message ?? 'cannot read it';
  if (/EACCES|permission denied/i.test(m)) return 'permission denied';
  if (/ENOENT|no such file/i.test(m)) return 'vanished while reading';
  return m;
}

export async function servePull(conn: Connection, begin: PullBegin, client: Hello, ctx: AgentContext): Promise<void> {
  const abs = resolveRemotePath(ctx.home, begin.path);
  const st = await fsp.lstat(abs).catch(() => null);
  const kind: PullState['kind'] = !st ? 'missing' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file';
  const state: PullState = { kind, path: abs };
  // Lanes the client opens for this pull, by number, until it says which to use.
  const admitted = new Map<number, Connection>();
  let lanes: LaneServer | null = null;
  if (begin.lanes && kind !== 'missing') {
    const server = await laneServer(ctx);
    if (server instanceof LaneServer) {
      lanes = server;
      state.lanes = server.expect((id, c) => void admitted.set(id, c));
    } else state.lanes = server;
  }
  try {
    await conn.sendJson(Frame.State, state);
    if (kind === 'missing') return;
    await sendPull(conn, begin, client, ctx, abs, kind, admitted);
  } finally {
    lanes?.closeExpected();
  }
}

type PulledKind = Exclude<PullState['kind'], 'missing'>;
type Recipes = Map<string, { chunks: Buffer; digest: Buffer }>;
/** Where each chunk of the pull can be read: the first file and offset that holds it. */
type ChunkPlaces = Map<string, { path: string; offset: number; len: number }>;

/** Lists, chunks and plans what was asked, then sends the chunks the client says it lacks. */
async function sendPull(conn: Connection, begin: PullBegin, client: Hello, ctx: AgentContext, abs: string, kind: PulledKind, admitted: Map<number, Connection>): Promise<void> {
  const { root, listing } = await listPulled(abs, kind, ctx);
  const files = listing.filter((e) => e.kind === 'file');
  const { recipes, unreadable } = await chunkPulled(ctx, begin, root, abs, kind, files);
  const { entries, where } = planPulled(listing, recipes);

  const compression = chooseCompression(client.compression, supportedCompressions(ctx.native));
  const plan: Plan = { mode: 'need', compression, deleteMode: 'none', dryRun: false, single: kind !== 'dir', ...(unreadable.length ? { unreadable } : {}) };
  await conn.sendJson(Frame.Plan, plan);
  for (let i = 0; i < entries.length; i += BATCH) await conn.send(Frame.Entries, encodeEntries(entries.slice(i, i + BATCH)));
  await conn.send(Frame.PlanEnd, Buffer.alloc(0));
  await sendNeeded(conn, ctx, root, compression, where, admitted);
}

/** What the pull covers: a directory's walk, or the one file or symlink, with the directory it lies in. */
async function listPulled(abs: string, kind: PulledKind, ctx: AgentContext): Promise<{ root: string; listing: WalkEntry[] }> {
  if (kind === 'dir') return { root: abs, listing: await walkTree(abs, ctx.log) };
  const name = Buffer.from(path.basename(abs), 'utf8').toString('latin1');
  const base = statFields(name, await fsp.lstat(abs, { bigint: true }));
  const target = kind === 'symlink' ? ((await fsp.readlink(abs, { encoding: 'buffer' })) as Buffer).toString('latin1') : null;
  return { root: path.dirname(abs), listing: [target !== null ? { ...base, kind: 'symlink', target } : { ...base, kind: 'file' }] };
}

/** Every file's recipe; a file that cannot be read is said to the client (which lists it and exits 3). */
async function chunkPulled(
  ctx: AgentContext,
  begin: PullBegin,
  root: string,
  abs: string,
  kind: PulledKind,
  files: WalkEntry[],
): Promise<{ recipes: Recipes; unreadable: Array<{ path: string; error: string }> }> {
  const recipes: Recipes = new Map();
  const unreadable: Array<{ path: string; error: string }> = [];
  if (ctx.native) {
    // A single large file this agent placed (a checkpoint a job rewrote since): its recorded recipe makes a hint.
    const hint = kind === 'file' && files.length === 1 && files[0]!.size >= 1 << 20 ? await recordedRecipe(ctx, abs) : null;
    const outcomes = await ctx.native.chunkFiles(
      root,
      files.map((f) => f.path),
      begin.chunkParams,
      hint ? [hint] : null,
    );
    outcomes.forEach((o, i) => {
      if (o.recipe) recipes.set(files[i]!.path, { chunks: o.recipe.chunks, digest: o.recipe.digest });
      else unreadable.push({ path: files[i]!.path, error: readError(o.error) });
    });
    return { recipes, unreadable };
  }
  const rootBuf = Buffer.from(root, 'utf8');
  for (const f of files) {
    try {
      const r = await ctx.chunker.chunkFile(Buffer.concat([rootBuf, Buffer.from('/' + f.path, 'latin1')]), begin.chunkParams);
      recipes.set(f.path, { chunks: r.chunks, digest: r.digest });
    } catch (e) {
      unreadable.push({ path: f.path, error: readError((e as Error).message) });
    }
  }
  return { recipes, unreadable };
}

/** The plan's entries, and where each chunk can be read from. */
function planPulled(listing: WalkEntry[], recipes: Recipes): { entries: PlanEntry[]; where: ChunkPlaces } {
  const where: ChunkPlaces = new Map();
  const entries: PlanEntry[] = [];
  for (const e of listing) {
    if (e.kind === 'dir') entries.push({ kind: 'dir', path: e.path, mode: e.mode });
    else if (e.kind === 'symlink') entries.push({ kind: 'symlink', path: e.path, target: e.target! });
    else {
      const r = recipes.get(e.path);
      if (!r) continue;
      let off = 0;
      for (let i = 0, n = chunkRefCount(r.chunks); i < n; i++) {
        const key = chunkRefId(r.chunks, i).toString('hex');
        const len = chunkRefLen(r.chunks, i);
        if (!where.has(key)) where.set(key, { path: e.path, offset: off, len });
        off += len;
      }
      entries.push({
        kind: 'file',
        path: e.path,
        mode: e.mode,
        size: off,
        mtimeSec: e.mtimeSec,
        mtimeNsec: e.mtimeNsec,
        digest: r.digest,
        ops: r.chunks.length ? [{ op: 'chunks', chunks: r.chunks }] : [],
      });
    }
  }
  return { entries, where };
}

/** The chunks the client needs, in its order, over the lanes it may open meanwhile. */
async function sendNeeded(
  conn: Connection,
  ctx: AgentContext,
  root: string,
  compression: Plan['compression'],
  where: ChunkPlaces,
  admitted: Map<number, Connection>,
): Promise<void> {
  const need = decodeIds((await conn.expect(Frame.Need)).payload);
  const pump = new DataPump(conn, compression, ctx.native, root);
  // While the data flows, the client may say which lanes it opened (a `lanes` frame); the frame after that, or
  // instead of it, is its done.
  const afterData = (async () => {
    const f = await conn.next();
    if (f?.type !== Frame.Lanes) return;
    const ids = LanesSwitch.decode(f.payload).lanes;
    if (!Array.isArray(ids) || ids.some((id) => !admitted.has(id))) throw new ProtocolError('the client named a lane that is not open');
    const ready: OpenLane[] = ids.map((id) => ({ id, conn: admitted.get(id)!, close: () => admitted.get(id)!.end() }));
    pump.offerLanes(async () => ready);
    await conn.next();
  })();
  afterData.catch(() => {});
  for (const id of need) {
    const loc = where.get(id.toString('hex'));
    if (!loc) throw new Error('client asked for a chunk that is not part of this pull');
    await pump.addFromFile(loc.path, loc.offset, loc.len);
  }
  await pump.finish();
  await afterData;
}
