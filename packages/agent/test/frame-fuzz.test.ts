// Frame fuzzing: recorded client sessions, mutated, fed to a real agent in process. Whatever arrives, the agent
// answers (an error frame at worst) and ends the session: no exception or rejection escapes, no session outlives
// its deadline, memory stays bounded, and nothing is written outside the destination (a sibling directory that a
// symlink in the destination points at stays as it was). SKYSYNC_FUZZ_SESSIONS sets how many (default 2000),
// SKYSYNC_SEED replays a run.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFallbackChunker, createNativeChunker, loadNative, type Chunker } from '@skysync/chunking';
import { Connection, Frame, FrameDecoder, type FrameMessage, encodeEntries, makeHello } from '@skysync/protocol';
import type { AgentContext } from '../src/context.js';
import { resolveRemotePath } from '../src/context.js';
import { serveConnection } from '../src/main.js';
import { Rng, seedFromEnv } from '../../../test/helpers/random.js';
import { mutate } from './helpers/mutate.js';
import { type RecordedSession, recordSessions, wireBytes } from './helpers/sessions.js';

const SESSIONS = Number(process.env.SKYSYNC_FUZZ_SESSIONS || 2000);
const DEADLINE_MS = 20_000;
/** The long test's time: grows with a long run's sessions (about 10 ms each here), never below the CI run's. */
const RUN_MS = Math.max(900_000, SESSIONS * 30);
/** Heap the run may grow by: a session holds at most a few frames of 16 MiB. */
const HEAP_GROWTH = 512 * 1024 * 1024;

const native = loadNative();
let chunker: Chunker;
let tmp: string;
let home: string;
let outside: string;
let template: string;

/** Everything under `dir`: relative path (latin1, one char per byte: names need not be UTF-8) -> kind and, for
 * files, a hash of the content. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const bytes = (p: string): Buffer => Buffer.from(p, 'latin1');
  const walk = (rel: string): void => {
    for (const d of fs.readdirSync(bytes(path.join(dir, rel)), { withFileTypes: true, encoding: 'buffer' })) {
      const r = path.join(rel, d.name.toString('latin1'));
      const abs = bytes(path.join(dir, r));
      if (d.isDirectory()) {
        out.set(r, 'dir');
        walk(r);
      } else if (d.isFile()) out.set(r, createHash('sha256').update(fs.readFileSync(abs)).digest('hex'));
      else out.set(r, d.isSymbolicLink() ? `link ${fs.readlinkSync(abs, 'latin1')}` : 'other');
    }
  };
  walk('');
  return out;
}

/** Empties the home, keeping the lane server's socket directory; then puts back the template when asked. */
function resetHome(withTemplate: boolean): void {
  for (const name of fs.readdirSync(home)) if (name !== '.skysync') fs.rmSync(path.join(home, name), { recursive: true, force: true });
  for (const name of fs.readdirSync(path.join(home, '.skysync'))) {
    if (name !== 'run') fs.rmSync(path.join(home, '.skysync', name), { recursive: true, force: true });
  }
  if (withTemplate) fs.cpSync(template, home, { recursive: true, verbatimSymlinks: true });
}

interface Outcome {
  served: boolean;
  /** The agent's error frame, if it sent one. */
  error: string | null;
  logs: string[];
}

async function replay(ctx: AgentContext, bytes: Buffer): Promise<Outcome> {
  const toAgent = new PassThrough();
  const fromAgent = new PassThrough();
  const decoder = new FrameDecoder();
  let error: string | null = null;
  fromAgent.on('data', (b: Buffer) => {
    try {
      for (const f of decoder.push(b)) if (f.type === Frame.Error) error = f.payload.toString();
    } catch (e) {
      error = `undecodable answer: ${(e as Error).message}`;
    }
  });
  const logs: string[] = [];
  const conn = new Connection(toAgent, fromAgent);
  toAgent.end(bytes);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the session did not end within ${DEADLINE_MS} ms`)), DEADLINE_MS);
  });
  // Sessions share one lane server, as the sessions of one agent process do (one per session left a server and a
  // process 'exit' listener behind each time).
  const session: AgentContext = { ...ctx, log: (m) => void logs.push(m) };
  try {
    const served = await Promise.race([serveConnection(conn, session), deadline]);
    return { served, error, logs };
  } finally {
    clearTimeout(timer);
    ctx.lanes ??= session.lanes;
  }
}

/** Destinations the session's begin frames name, as the agent resolves them: where it may write. */
function namedRoots(frames: FrameMessage[]): string[] {
  const roots = [path.join(home, '.skysync')];
  for (const f of frames) {
    if (f.type !== Frame.Begin) continue;
    try {
      const b = JSON.parse(f.payload.toString()) as { dest?: unknown; file?: unknown };
      if (typeof b.dest !== 'string') continue;
      const dest = resolveRemotePath(home, b.dest);
      roots.push(b.file ? path.dirname(dest) : dest);
    } catch {
      // Not JSON: the agent refuses it before writing.
    }
  }
  // As the snapshot spells paths: the bytes on disk (the agent writes a name as UTF-8), one latin1 char each.
  return roots.map((r) => Buffer.from(r, 'utf8').toString('latin1'));
}

const within = (p: string, root: string): boolean => p === root || p.startsWith(root + path.sep) || root.startsWith(p + path.sep);

/**
 * What changed in the home since `before` lies under a destination the session named (or the agent's state), the
 * temp directory holds nothing new beside the home, and the directory a symlink in the destination points at is
 * as it was.
 */
function expectNoWriteOutside(current: string, frames: FrameMessage[], before: Map<string, string>, outsideBefore: Map<string, string>): void {
  const roots = namedRoots(frames);
  for (const name of fs.readdirSync(tmp)) expect(['home', 'outside', 'template'], `${current}: ${name} beside the home`).toContain(name);
  const after = snapshot(home);
  const touched = [...after].filter(([rel, v]) => before.get(rel) !== v).map(([rel]) => rel);
  touched.push(...[...before.keys()].filter((rel) => !after.has(rel)));
  const homeBytes = Buffer.from(home, 'utf8').toString('latin1');
  for (const rel of touched) {
    const abs = path.join(homeBytes, rel);
    expect(
      roots.some((r) => within(abs, r)),
      `${current}: ${rel} written outside ${roots.join(', ')}`,
    ).toBe(true);
  }
  expect(snapshot(outside), `${current}: the directory beside the destination changed`).toEqual(outsideBefore);
}

beforeAll(async () => {
  chunker = native ? createNativeChunker(native) : await createFallbackChunker();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-fuzz-'));
  home = path.join(tmp, 'home');
  outside = path.join(tmp, 'outside');
  template = path.join(tmp, 'template');
  fs.mkdirSync(path.join(home, '.skysync'), { recursive: true });
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, 'keep.txt'), "not the agent's\n");
  fs.mkdirSync(path.join(outside, 'src'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('frame fuzzing', { timeout: RUN_MS }, () => {
  it(`mutated sessions neither crash, hang, grow memory nor write outside the destination (${SESSIONS} sessions, seeded)`, async () => {
    const seed = seedFromEnv();
    const rng = new Rng(seed);
    const ctx: AgentContext = { home: '', native, chunker, log: () => {} };
    const sessions: RecordedSession[] = recordSessions(chunker, native, rng);
    const escaped: unknown[] = [];
    const onEscape = (e: unknown): void => void escaped.push(e);
    process.on('unhandledRejection', onEscape);
    process.on('uncaughtException', onEscape);
    const outsideBefore = snapshot(outside);
    let current = 'recording';
    const stats = { sessions: 0, served: 0, refused: 0 };
    try {
      ctx.home = home;
      // The recorded sessions as they are: each one is served, and the initial push leaves the template.
      for (const s of sessions) {
        current = `unmutated ${s.name}`;
        resetHome(s.onTemplate);
        const out = await replay(ctx, wireBytes(s.frames));
        expect(out, current).toMatchObject({ served: true, error: null });
        if (s.name === 'initial') {
          fs.cpSync(home, template, { recursive: true, verbatimSymlinks: true, filter: (p) => !p.includes(`${path.sep}run`) });
        }
      }
      const heapBefore = process.memoryUsage().heapUsed;
      let heapPeak = heapBefore;
      for (let i = 0; i < SESSIONS; i++) {
        const m = mutate(sessions, rng);
        current = `session ${i} (${m.from}: ${m.mutations.join('; ')})`;
        resetHome(m.session.onTemplate);
        const homeBefore = snapshot(home);
        const out = await replay(ctx, m.bytes);
        stats.sessions++;
        if (out.error) stats.refused++;
        else stats.served++;
        // An answer the agent gave in JavaScript's words instead of its own is a defect too.
        expect(out.error ?? '', current).not.toMatch(/is not a function|Cannot read properties|is not iterable|undefined|NaN/);
        expectNoWriteOutside(current, m.frames, homeBefore, outsideBefore);
        if (escaped.length) throw new Error(`escaped the agent: ${escaped.map((e) => (e instanceof Error ? e.stack : String(e))).join('\n')}`);
        if (i % 50 === 0) heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed);
      }
      expect(heapPeak - heapBefore, 'heap growth over the run').toBeLessThan(HEAP_GROWTH);
      console.log(`frame fuzz: ${JSON.stringify(stats)} (SKYSYNC_SEED=${seed})`);
      // Most sessions must reach past the checks of the first frames, or the run tests little.
      expect(stats.served, JSON.stringify(stats)).toBeGreaterThan(SESSIONS / 20);
    } catch (e) {
      throw new Error(`${(e as Error).message}\nat ${current} (replay with SKYSYNC_SEED=${seed})`);
    } finally {
      process.off('unhandledRejection', onEscape);
      process.off('uncaughtException', onEscape);
      await (await ctx.lanes)?.closeExpected();
    }
  });

  // Issue 22, defect 2: the smallest session the fuzzing found for it. A file entry whose one chunk says 20 bytes
  // while 10 arrive, then the end of the data: the agent must answer with an error frame, and the receiver's take of
  // those bytes must not be left rejected with nobody waiting (it was: an unhandled rejection from DataStream.end).
  it('a chunk length that lies, then the end of the data: an error frame and nothing escapes', async () => {
    const bytes = Buffer.from('0123456789');
    const recipe = chunker.chunkBuffer(bytes);
    const chunks = Buffer.from(recipe.chunks);
    chunks.writeUInt32LE(20, 32);
    const json = (type: number, v: unknown): FrameMessage => ({ type, payload: Buffer.from(JSON.stringify(v)) });
    const frames: FrameMessage[] = [
      json(Frame.Hello, makeHello({ role: 'client', software: 'repro', compression: ['none'], native: true })),
      json(Frame.Begin, { op: 'push', dest: '~/dest', base: null, chunkParams: { minSize: 4096, avgSize: 16384, maxSize: 65536 } }),
      json(Frame.Plan, { mode: 'data', compression: 'none', deleteMode: 'placed', dryRun: false }),
      {
        type: Frame.Entries,
        payload: encodeEntries([{ kind: 'file', path: 'f', mode: 0o644, size: 10, mtimeSec: 1, mtimeNsec: 0, digest: recipe.digest, ops: [{ op: 'chunks', chunks }] }]),
      },
      { type: Frame.PlanEnd, payload: Buffer.alloc(0) },
      { type: Frame.Data, payload: bytes },
      { type: Frame.DataEnd, payload: Buffer.alloc(0) },
    ];
    const escaped: unknown[] = [];
    const onEscape = (e: unknown): void => void escaped.push(e);
    process.on('unhandledRejection', onEscape);
    try {
      resetHome(false);
      const out = await replay({ home, native, chunker, log: () => {} }, wireBytes(frames));
      await new Promise((r) => setTimeout(r, 100));
      expect(out.error).toMatch(/chunk data ended early/);
      expect(escaped).toEqual([]);
    } finally {
      process.off('unhandledRejection', onEscape);
    }
  });
});
