// A seeded property test of push and pull on the local target: hundreds of random rounds of edits to a source
// tree, a push after each, and an independent check (plain fs walk + SHA-256, git's own ignore rules) that the
// destination equals the source minus ignored paths, with deletions propagated and job outputs left alone.

import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadNative } from '@skysync/chunking';
import { push, pull, type PushOptions, type PushStats } from '@skysync/engine';
import { LocalTarget } from '@skysync/transport';
import { Rng, seedFromEnv } from './helpers/random.js';
import { scratchDir } from './helpers/scratch.js';
import { diffItems, gitKept, listTree, walk, type Item } from './helpers/tree.js';

const native = loadNative()!;
const JOB_SHA = createHash('sha256').update('changed by a job\n').digest('hex');
const ROUNDS = Number(process.env.SKYSYNC_ROUNDS ?? 200);
const NAMES = ['a', 'b', 'c', 'src', 'lib', 'data', 'build', 'notes', 'x.log', 'keep.log', 'tmp1', 'ümlaut', 'sp ace'];
const PATTERNS = ['*.log', 'build/', '/data', '!keep.log', 'tmp*', 'b/c', '**/lib/*.bin', 'notes'];

const work = scratchDir('skysync-prop-');
beforeAll(() => {
  process.env.SKYSYNC_STATE_DIR = path.join(work(), 'state');
});

function randomPath(rng: Rng, dirs: string[]): string {
  const dir = dirs.length && rng.chance(0.7) ? rng.pick(dirs) : '';
  const name = rng.pick(NAMES) + (rng.chance(0.5) ? `${rng.int(5)}` : '') + (rng.chance(0.3) ? '.bin' : rng.chance(0.5) ? '.txt' : '');
  return dir ? `${dir}/${name}` : name;
}

function content(rng: Rng): Buffer {
  const r = rng.next();
  if (r < 0.6) return Buffer.from(`line ${rng.int(1e6)}\n`.repeat(rng.int(200)));
  if (r < 0.85) return rng.bytes(rng.int(64 * 1024));
  // A block repeated many times: the same chunks recur inside one file.
  if (r < 0.9) return Buffer.concat(Array.from({ length: 4 + rng.int(20) }, () => rng.bytes(70 * 1024 + rng.int(100 * 1024))).flatMap((b, _i, all) => [b, all[0]!]));
  return rng.bytes(300 * 1024 + rng.int(2 * 1024 * 1024));
}

/** One random edit of the source tree; returns a description for the failure message. */
function mutate(rng: Rng, src: string): string {
  const { files, dirs } = listTree(src);
  const regular = files.filter((f) => fs.lstatSync(path.join(src, f)).isFile() && !f.endsWith('.gitignore'));
  const op = rng.int(14);
  const abs = (p: string): string => path.join(src, p);
  const clear = (p: string): void => fs.rmSync(abs(p), { recursive: true, force: true });
  try {
    switch (op) {
      case 0:
      case 1: {
        const p = randomPath(rng, dirs);
        clear(p);
        fs.mkdirSync(path.dirname(abs(p)), { recursive: true });
        fs.writeFileSync(abs(p), content(rng));
        return `create ${p}`;
      }
      case 2: {
        if (!regular.length) return 'noop';
        const p = rng.pick(regular);
        fs.writeFileSync(abs(p), content(rng));
        return `rewrite ${p}`;
      }
      case 3: {
        const big = regular.filter((f) => fs.statSync(abs(f)).size > 100_000);
        if (!big.length) return 'noop';
        const p = rng.pick(big);
        const b = fs.readFileSync(abs(p));
        const at = rng.int(b.length);
        const edited = rng.chance(0.5)
          ? Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(100)), b.subarray(at)])
          : Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + rng.int(5000)))]);
        fs.writeFileSync(abs(p), edited);
        return `splice ${p} at ${at}`;
      }
      case 4: {
        if (!regular.length) return 'noop';
        const from = rng.pick(regular);
        const to = randomPath(
          rng,
          dirs.filter((d) => !d.startsWith(from)),
        );
        if (to === from || to.startsWith(from + '/')) return 'noop';
        clear(to);
        fs.mkdirSync(path.dirname(abs(to)), { recursive: true });
        fs.renameSync(abs(from), abs(to));
        return `rename ${from} -> ${to}`;
      }
      case 5: {
        if (!regular.length) return 'noop';
        const from = rng.pick(regular);
        const to = randomPath(rng, dirs);
        if (to === from || from.startsWith(to + '/')) return 'noop';
        clear(to);
        fs.mkdirSync(path.dirname(abs(to)), { recursive: true });
        fs.copyFileSync(abs(from), abs(to));
        if (rng.chance(0.5) && fs.statSync(abs(to)).size > 0) {
          const fd = fs.openSync(abs(to), 'r+');
          fs.writeSync(fd, rng.bytes(16), 0, 16, rng.int(fs.statSync(abs(to)).size));
          fs.closeSync(fd);
        }
        return `copy ${from} -> ${to}`;
      }
      case 6: {
        if (!dirs.length) return 'noop';
        const d = rng.pick(dirs);
        const to = rng.pick(NAMES) + `d${rng.int(9)}`;
        if (to === d || to.startsWith(d + '/') || fs.existsSync(abs(to))) return 'noop';
        fs.renameSync(abs(d), abs(to));
        return `move dir ${d} -> ${to}`;
      }
      case 7: {
        // Type changes in every direction.
        const p = files.length && rng.chance(0.7) ? rng.pick(files) : dirs.length ? rng.pick(dirs) : randomPath(rng, []);
        const st = fs.existsSync(abs(p)) ? fs.lstatSync(abs(p)) : null;
        clear(p);
        fs.mkdirSync(path.dirname(abs(p)), { recursive: true });
        if (st?.isDirectory() || rng.chance(0.3)) {
          if (rng.chance(0.5)) fs.symlinkSync(rng.pick(['a.txt', '../x', 'nowhere', 'src']), abs(p));
          else fs.writeFileSync(abs(p), content(rng));
        } else {
          fs.mkdirSync(abs(p));
          fs.writeFileSync(abs(`${p}/inner.txt`), content(rng));
        }
        return `type change ${p}`;
      }
      case 8: {
        if (!regular.length) return 'noop';
        const p = rng.pick(regular);
        fs.chmodSync(abs(p), rng.pick([0o644, 0o755, 0o600, 0o640]));
        return `chmod ${p}`;
      }
      case 9: {
        const p = randomPath(rng, dirs);
        clear(p);
        fs.mkdirSync(path.dirname(abs(p)), { recursive: true });
        fs.symlinkSync(rng.pick(['a.txt', '../lib', 'missing/target', '/etc/hostname']), abs(p));
        return `symlink ${p}`;
      }
      case 10: {
        const victims = [...files, ...dirs];
        if (!victims.length) return 'noop';
        const p = rng.pick(victims);
        clear(p);
        return `delete ${p}`;
      }
      case 11: {
        const where = dirs.length && rng.chance(0.4) ? rng.pick(dirs) : '';
        const lines = Array.from({ length: rng.int(3) }, () => rng.pick(PATTERNS));
        fs.writeFileSync(path.join(src, where, '.gitignore'), lines.join('\n') + '\n');
        return `ignore ${where || '.'}: ${lines.join(', ')}`;
      }
      case 12: {
        if (!regular.length) return 'noop';
        const p = rng.pick(regular);
        const t = new Date(Date.now() - rng.int(1e9));
        fs.utimesSync(abs(p), t, t);
        return `touch ${p}`;
      }
      default: {
        const d = randomPath(rng, dirs);
        clear(d);
        fs.mkdirSync(abs(d), { recursive: true });
        return `mkdir ${d}`;
      }
    }
  } catch (e) {
    return `skipped (${(e as Error).message})`;
  }
}

function expected(src: string, gitDir: string): Map<string, Item> {
  const kept = gitKept(src, gitDir);
  const items = walk(src);
  const out = new Map<string, Item>();
  for (const [p, it] of items) if (it.type !== 'dir' && kept.has(p)) out.set(p, it);
  return out;
}

function actualFiles(dest: string): Map<string, Item> {
  const out = new Map<string, Item>();
  for (const [p, it] of walk(dest, { skip: (r) => r === 'outputs' })) if (it.type !== 'dir') out.set(p, it);
  return out;
}

/**
 * Random rounds of edits with a push after each, checked against the source; `name` keeps the case's trees apart.
 * A failure names the seed that replays it.
 */
async function pushRounds(agent: 'native' | 'fallback', seed: number, rounds: number, name: string = agent): Promise<void> {
  const rng = new Rng(seed);
  const src = path.join(work(), `src-${name}`);
  const home = path.join(work(), `home-${name}`);
  if (agent === 'fallback') process.env.SKYSYNC_NO_NATIVE = '1';
  else delete process.env.SKYSYNC_NO_NATIVE;
  const dest = path.join(home, 'sky_workdir');
  const gitDir = path.join(work(), `oracle-${name}.git`);
  fs.mkdirSync(src, { recursive: true });
  const target = new LocalTarget('local:' + home, home);
  const log: string[] = [];
  // Placed files a job changed on the remote: if the user also deletes them locally, they stay (skysync never
  // deletes what it did not write), and they may block a type change above them.
  const jobTouched = new Set<string>();
  const compression: PushOptions['compression'] = agent === 'fallback' ? ['zstd', 'deflate'] : undefined;
  /** The destination equals the source, but for what the job's files still in the way block. */
  const verify = (stats: PushStats, when: string): void => {
    const want = expected(src, gitDir);
    const got = actualFiles(dest);
    const blockers = [...jobTouched].filter((p) => !want.has(p) && got.get(p)?.sha === JOB_SHA);
    for (const p of [...jobTouched]) if (!blockers.includes(p)) jobTouched.delete(p);
    const related = (p: string): boolean => blockers.some((b) => b === p || b.startsWith(p + '/') || p.startsWith(b + '/'));
    for (const b of blockers) got.delete(b);
    for (const p of [...want.keys()]) if (related(p)) want.delete(p);
    for (const p of [...got.keys()]) if (related(p)) got.delete(p);
    const failed = stats.failed.filter((f) => !(related(f.path) && /did not place/.test(f.error)));
    const problems = diffItems(want, got, { mtime: true });
    if (problems.length || failed.length) {
      throw new Error(
        `seed ${seed}, ${when}: destination differs from source\n${problems.slice(0, 20).join('\n')}\n` +
          `failed: ${JSON.stringify(failed)}\nlast edits:\n${log.slice(-12).join('\n')}`,
      );
    }
    const outputs = path.join(dest, 'outputs');
    if (fs.existsSync(outputs)) {
      for (const f of fs.readdirSync(outputs)) expect(fs.readFileSync(path.join(outputs, f), 'utf8')).toMatch(/^output \d+\n$/);
    }
  };
  try {
    for (let round = 0; round < rounds; round++) {
      const n = 1 + rng.int(4);
      for (let i = 0; i < n; i++) log.push(`round ${round}: ${mutate(rng, src)}`);
      // Now and then a job writes on the remote: an output file (must survive) or a placed file (local wins).
      if (round > 0 && rng.chance(0.15)) {
        fs.mkdirSync(path.join(dest, 'outputs'), { recursive: true });
        fs.writeFileSync(path.join(dest, 'outputs', `job${round}.txt`), `output ${round}\n`);
        const placed = [...actualFiles(dest)].filter(([, it]) => it.type === 'file');
        if (placed.length && rng.chance(0.5)) {
          const [p] = rng.pick(placed);
          fs.writeFileSync(path.join(dest, p), 'changed by a job\n');
          jobTouched.add(p);
          log.push(`round ${round}: remote drift ${p}`);
        }
      }
      // SKYSYNC_PROPERTY_SNAPSHOT=DIR keeps the state before each push, to replay a failing one by hand.
      const snap = process.env.SKYSYNC_PROPERTY_SNAPSHOT;
      if (snap) {
        fs.rmSync(snap, { recursive: true, force: true });
        // The state dir holds the watch service's socket, which cannot be copied and is not needed to replay.
        fs.cpSync(work(), snap, { recursive: true, verbatimSymlinks: true, filter: (from) => !fs.lstatSync(from).isSocket() });
      }
      verify(await push({ source: src, target, native, compression }), `round ${round}`);
    }
    // The agent really ran the way this case claims: its state file tells which store it used.
    const stateFiles = fs.readdirSync(path.join(home, '.skysync', 'state'));
    expect(stateFiles.some((f) => f.endsWith(agent === 'native' ? '.tree' : '.manifest'))).toBe(true);
    expect(stateFiles.some((f) => f.endsWith(agent === 'native' ? '.manifest' : '.tree'))).toBe(false);
    // A job's file still in the way keeps the remote different from the source, so every push retries what it
    // blocks (see push-blocked.test.ts): a no-op push can move nothing only once it is gone. Move the job's files
    // away, as the failure asks; the push after that must leave the destination exactly equal to the source.
    if (jobTouched.size) {
      for (const p of jobTouched) fs.rmSync(path.join(dest, p), { force: true });
      log.push(`moved away ${[...jobTouched].join(', ')}`);
      verify(await push({ source: src, target, native, compression }), 'after the blockers were moved away');
      expect([...jobTouched]).toEqual([]);
    }
    // A no-op push moves nothing.
    const again = await push({ source: src, target, native });
    expect(again.filesChanged).toBe(0);
    expect(again.bytesLiteral).toBe(0);
  } catch (e) {
    console.error(`push property test (${agent} agent) failed with SKYSYNC_SEED=${seed}`);
    throw e;
  } finally {
    delete process.env.SKYSYNC_NO_NATIVE;
  }
}

describe('push property test (local target)', () => {
  // The agent with the native addon, and the agent on its TypeScript fallback (chunker, manifest, deflate).
  for (const agent of ['native', 'fallback'] as const) {
    const rounds = agent === 'native' ? ROUNDS : Math.ceil(ROUNDS / 4);
    it(`stays equal to the source over ${rounds} random rounds (${agent} agent)`, () => pushRounds(agent, seedFromEnv(), rounds), 600_000);
    // Seed 555743719 leaves a job's file blocking a type change (directory `.gitignore` to a file) from round 11
    // on, so the closing no-op push retried the blocked path. Pinned, whatever SKYSYNC_SEED says.
    it(`still moves nothing on a no-op push once a blocked type change is cleared (${agent} agent, seed 555743719)`, () => pushRounds(agent, 555743719, 12, `${agent}-blocked`));
  }

  it('pulls a remote directory back exactly, reusing what is already local', async () => {
    const seed = seedFromEnv();
    const rng = new Rng(seed ^ 0x5eed);
    const home = path.join(work(), 'pull-home');
    const remote = path.join(home, 'results');
    fs.mkdirSync(remote, { recursive: true });
    const target = new LocalTarget('local:' + home, home);
    const local = path.join(work(), 'pulled');
    try {
      for (let round = 0; round < 25; round++) {
        for (let i = 0; i < 1 + rng.int(4); i++) mutate(rng, remote);
        let stats = await pull({ target, remotePath: 'results', localPath: local, native });
        if (stats.failed.length) {
          // Like rsync without --delete, a pull does not wipe a local directory to put a file there: the message
          // says to move it away. Do that, as the user would, and pull again.
          for (const f of stats.failed) {
            expect(f.error).toMatch(/move them away/);
            fs.rmSync(path.join(local, f.path), { recursive: true, force: true });
          }
          stats = await pull({ target, remotePath: 'results', localPath: local, native });
        }
        expect(stats.failed).toEqual([]);
        // Pull never deletes local extras (like rsync without --delete): compare what the remote has.
        const want = new Map([...walk(remote)].filter(([, it]) => it.type !== 'dir'));
        const got = new Map([...walk(local)].filter(([p, it]) => it.type !== 'dir' && want.has(p)));
        const problems = diffItems(want, got, { mtime: true });
        if (problems.length) throw new Error(`seed ${seed}, pull round ${round}:\n${problems.slice(0, 20).join('\n')}`);
      }
      // A second pull of an unchanged remote sends no chunk data.
      const again = await pull({ target, remotePath: 'results', localPath: local, native });
      expect(again.bytesLiteral).toBe(0);
    } catch (e) {
      console.error(`pull property test failed with SKYSYNC_SEED=${seed}`);
      throw e;
    }
  }, 600_000);
});
