// The watcher-assisted scan against a full one, on a real filesystem. A seeded random test mutates a tree round
// after round (files, directories, renames, symlinks, hard links, FIFOs, ignore files, same-size rewrites with
// the same mtime, edits right after a scan) and checks that the partial scan of what the watcher names gives
// exactly the full scan's tree, changes and warnings, chaining partial trees the way pushes do. Then the CLI end
// to end through a local target, with the watch service it starts.

import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { loadNative, type ScanResult, type Tree } from '@skysync/chunking';
import { askWatch, rescanOf, stopWatch, watchSocketPath, watchStatus } from '@skysync/engine';
import { nativeAddonPath } from '@skysync/transport';
import { Rng, seedFromEnv } from './helpers/random.js';
import { scratchDir } from './helpers/scratch.js';
import { listTree } from './helpers/tree.js';

const native = loadNative()!;
const ROUNDS = Number(process.env.SKYSYNC_ROUNDS ?? 300);
const NAMES = ['a', 'b', 'c', 'src', 'lib', 'x.log', 'keep.log', 'build', 'tmp1', 'a.b', 'a-b', 'ümlaut', 'sp ace'];
const RULES = ['*.log', 'build/', '!keep.log', 'tmp*', 'b/c', '/lib', 'src/*.txt', '**/a/*.bin'];
const linux = process.platform === 'linux';

const work = scratchDir('skysync-watch-');

/** Writes a regular file; never through a FIFO (opening one for writing waits for a reader). */
function put(file: string, data: string | Buffer): void {
  try {
    const st = fs.lstatSync(file);
    if (!st.isFile() && !st.isSymbolicLink()) return;
    if (st.isSymbolicLink() && !fs.statSync(file).isFile()) return;
  } catch {
    // New.
  }
  try {
    fs.writeFileSync(file, data);
  } catch {
    // A directory on the way is a file now, or the like: the tree just stays as it is.
  }
}

/**
 * `watched(dir)`: the directory is in the tree (not ignored). A hard link is only ever made there: a second name
 * made in an ignored directory or outside the tree gives no event at all (see watch.rs), and writes through it
 * would go unseen.
 */
function mutate(rng: Rng, root: string, watched: (dir: string) => boolean): string {
  const { files, dirs } = listTree(root);
  const dir = dirs.length && rng.chance(0.75) ? rng.pick(dirs) : '';
  const fresh = (): string => (dir ? `${dir}/` : '') + rng.pick(NAMES) + (rng.chance(0.3) ? rng.pick(['.txt', '.bin', '']) : '');
  const abs = (r: string): string => path.join(root, r);
  const anyFile = (): string | null => (files.length ? rng.pick(files) : null);
  const op = rng.int(18);
  try {
    switch (op) {
      case 0:
      case 1: {
        const f = fresh();
        put(abs(f), `line ${rng.int(1e6)}\n`.repeat(rng.int(30)));
        return `write ${f}`;
      }
      case 2: {
        const f = anyFile();
        if (!f) return 'nothing';
        fs.rmSync(abs(f), { force: true });
        return `rm ${f}`;
      }
      case 3: {
        // Same size, same (whole-second) mtime: only the ctime, and the bytes, tell.
        const f = anyFile();
        if (!f || !fs.lstatSync(abs(f)).isFile()) return 'nothing';
        const st = fs.statSync(abs(f));
        const t = Math.floor(st.mtimeMs / 1000);
        fs.utimesSync(abs(f), t, t);
        put(abs(f), Buffer.alloc(st.size, 0x7a));
        fs.utimesSync(abs(f), t, t);
        return `rewrite same size and mtime ${f}`;
      }
      case 4: {
        const f = anyFile();
        if (!f || !fs.lstatSync(abs(f)).isFile()) return 'nothing';
        fs.chmodSync(abs(f), rng.chance(0.5) ? 0o755 : 0o644);
        return `chmod ${f}`;
      }
      case 5: {
        const f = anyFile();
        if (!f || !fs.lstatSync(abs(f)).isFile()) return 'nothing';
        const t = Date.now() / 1000 - rng.int(5000);
        fs.utimesSync(abs(f), t, t);
        return `touch ${f}`;
      }
      case 6:
      case 7: {
        const d = fresh();
        fs.mkdirSync(abs(`${d}/${rng.pick(NAMES)}`), { recursive: true });
        put(abs(`${d}/f${rng.int(3)}`), 'in a new directory\n');
        return `mkdir ${d}`;
      }
      case 8: {
        if (!dirs.length) return 'nothing';
        const d = rng.pick(dirs);
        fs.rmSync(abs(d), { recursive: true, force: true });
        return `rm -r ${d}`;
      }
      case 9: {
        if (!dirs.length) return 'nothing';
        const d = rng.pick(dirs);
        const to = fresh();
        fs.renameSync(abs(d), abs(to));
        return `mv ${d} ${to}`;
      }
      case 10: {
        const f = fresh();
        const target = rng.chance(0.7) && files.length ? rng.pick(files) : rng.pick(['nowhere', '../a', dirs[0] ?? 'x']);
        fs.symlinkSync(target, abs(f));
        return `ln -s ${target} ${f}`;
      }
      case 11: {
        const f = dir ? `${dir}/.gitignore` : '.gitignore';
        const rules = Array.from({ length: rng.int(3) }, () => rng.pick(RULES));
        put(abs(f), rules.join('\n') + '\n');
        return `rules ${f}: ${rules.join(' ')}`;
      }
      case 12: {
        if (!dirs.length) return 'nothing';
        const d = rng.pick(dirs);
        fs.chmodSync(abs(d), rng.chance(0.5) ? 0o700 : 0o755);
        return `chmod dir ${d}`;
      }
      case 13: {
        const f = fresh();
        if (fs.existsSync(abs(f))) return 'nothing';
        const r = spawnSync('mkfifo', [abs(f)]);
        return r.status === 0 ? `mkfifo ${f}` : 'nothing';
      }
      case 14: {
        // Saved the way editors save: a new file renamed over the old name.
        const f = anyFile();
        if (!f) return 'nothing';
        const tmp = abs(`${f}.swp~`);
        put(tmp, `saved ${rng.int(1e6)}\n`);
        fs.renameSync(tmp, abs(f));
        return `save-by-rename ${f}`;
      }
      case 15: {
        const f = anyFile();
        if (!f || !fs.lstatSync(abs(f)).isFile() || !rng.chance(0.4) || !watched(dir)) return 'nothing';
        const to = fresh();
        fs.linkSync(abs(f), abs(to));
        return `ln ${f} ${to}`;
      }
      case 16: {
        // Appended to (through any of its names).
        const f = anyFile();
        if (!f || !fs.lstatSync(abs(f)).isFile()) return 'nothing';
        fs.appendFileSync(abs(f), `more ${rng.int(100)}\n`);
        return `append ${f}`;
      }
      default: {
        const f = anyFile();
        if (!f) return 'nothing';
        const to = fresh();
        fs.renameSync(abs(f), abs(to));
        return `mv ${f} ${to}`;
      }
    }
  } catch (e) {
    return `failed (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
  }
}

function changeLines(r: ScanResult): string[] {
  return r.changes.map((c) => {
    const e = c.entry;
    const prev = c.prevRecipe ? c.prevRecipe.digest.toString('hex').slice(0, 12) : '-';
    return `${c.status} ${e.kind} ${JSON.stringify(e.path)} ${e.mode.toString(8)} ${e.size} ${e.mtimeSec}.${e.mtimeNsec} ${e.target ?? ''} ${c.prevKind ?? '-'} ${prev}`;
  });
}

function entryLines(t: Tree): string[] {
  return t.entries().map((e) => `${e.kind} ${JSON.stringify(e.path)} ${e.mode.toString(8)} ${e.size} ${e.mtimeSec}.${e.mtimeNsec} ${e.target ?? ''}`);
}

function warningLines(r: ScanResult): string[] {
  return r.warnings.map((w) => `${w.kind} ${JSON.stringify(w.path)} ${w.message}`);
}

/** Records recipes for what a scan found new or changed, as a push does. */
async function chunkChanged(root: string, r: ScanResult): Promise<void> {
  const paths = r.changes.filter((c) => c.status !== 'deleted' && c.entry.kind === 'file').map((c) => c.entry.path);
  if (!paths.length) return;
  const out = await native.chunkFiles(root, paths);
  out.forEach((o, i) => {
    if (!(o.recipe && r.tree.setRecipe(paths[i]!, o.recipe.chunks))) r.tree.forget(paths[i]!);
  });
}

describe.runIf(linux)('watcher-assisted scan', () => {
  it(`equals a full scan after each of ${ROUNDS} rounds of random changes`, async () => {
    const seed = seedFromEnv();
    const rng = new Rng(seed);
    const root = path.join(work(), 'random');
    fs.mkdirSync(root);
    for (const f of ['a/b/one', 'a/two', 'src/x.txt', 'lib/y', 'top', '.gitignore']) {
      fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
      fs.writeFileSync(path.join(root, f), f === '.gitignore' ? '*.log\nbuild/\n' : `${f}\n`);
    }
    const watcher = new native.Watcher(root);
    const log: string[] = [];
    let partial = 0;
    let listed = 0;
    let total = 0;
    try {
      let first = watcher.changesSince(null);
      for (let i = 0; first.state === 'starting' && i < 2000; i++) {
        await new Promise((r) => setTimeout(r, 5));
        first = watcher.changesSince(null);
      }
      expect(first.state).toBe('ok');
      let token = first.token!;
      let base = await native.scan(root, null);
      await chunkChanged(root, base);
      for (let round = 0; round < ROUNDS; round++) {
        const ops = 1 + rng.int(4);
        const tree = base.tree;
        const watched = (d: string): boolean => d === '' || tree.entry(d)?.kind === 'dir';
        for (let k = 0; k < ops; k++) log.push(`${round}: ${mutate(rng, root, watched)}`);
        const answer = watcher.changesSince(token);
        expect(answer.state).toBe('ok');
        let next: ScanResult;
        if (answer.full) next = await native.scan(root, base.tree);
        else {
          const plan = rescanOf(
            answer,
            base.warnings.map((w) => w.path),
          );
          next = await native.scanPartial(root, base.tree, plan.dirs, plan.subtrees);
          const whole = await native.scan(root, base.tree);
          const where = (): string =>
            `seed ${seed} (SKYSYNC_SEED=${seed} to replay), round ${round}; last operations:\n${log.slice(-10).join('\n')}\n` +
            `listed ${JSON.stringify(plan.dirs)} whole ${JSON.stringify(plan.subtrees)}`;
          expect(next.stats.partial, where()).toBe(true);
          expect(entryLines(next.tree), where()).toEqual(entryLines(whole.tree));
          expect(changeLines(next), where()).toEqual(changeLines(whole));
          expect(warningLines(next), where()).toEqual(warningLines(whole));
          const { dirsListed: _a, durationMs: _b, partial: _c, ignored: _d, ...rest } = next.stats;
          const { dirsListed: _e, durationMs: _f, partial: _g, ignored: _h, ...restWhole } = whole.stats;
          expect(rest, where()).toEqual(restWhole);
          partial++;
          listed += next.stats.dirsListed;
          total += whole.stats.dirsListed;
        }
        await chunkChanged(root, next);
        base = next;
        token = answer.token!;
      }
    } catch (e) {
      process.stderr.write(`watch random test: SKYSYNC_SEED=${seed} replays this run\n`);
      throw e;
    } finally {
      watcher.close();
    }
    process.stderr.write(`watch random test (seed ${seed}): ${partial} of ${ROUNDS} rounds partial, listing ${listed} directories where full scans listed ${total}\n`);
    expect(partial).toBeGreaterThan(ROUNDS / 3);
  });
});

const BIN = path.resolve('packages/cli/dist/bin.js');

describe.runIf(linux)('skysync push with the watch service', () => {
  const env = (): NodeJS.ProcessEnv => ({ ...process.env, SKYSYNC_STATE_DIR: path.join(work(), 'state'), SKYSYNC_WATCH_PERSIST: '120' });
  const push = (src: string, home: string, extra: NodeJS.ProcessEnv = {}) => {
    const r = spawnSync(process.execPath, [BIN, 'push', `local:${home}`, '-w', src, '--json'], { encoding: 'utf8', env: { ...env(), ...extra } });
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { scan: string; scanDirs: number; scanReason?: string; filesChanged: number; filesScanned: number };
  };

  // An ignored file that came and went changes its directory's times: the compare leaves those aside (nothing to
  // send), but the scan's tree is no longer equal to the saved one. The token must be saved all the same, or each
  // later push asks about the old one (with none saved yet: scans in full every time).
  // The CLI and a test runner (or any other caller) may reach the addon through a workspace's symlink or
  // directly: both must find the same service, or a push would ask one that a caller never sees.
  it('finds the same service whichever path reaches the addon', () => {
    const addon = nativeAddonPath();
    expect(addon).not.toBeNull();
    expect(fs.realpathSync(addon!)).toBe(addon);
    const link = path.join(work(), 'addon-link.node');
    fs.symlinkSync(addon!, link);
    const before = process.env.SKYSYNC_NATIVE_PATH;
    const src = path.join(work(), 'key-src');
    process.env.SKYSYNC_STATE_DIR = path.join(work(), 'state-key');
    try {
      process.env.SKYSYNC_NATIVE_PATH = addon!;
      const direct = watchSocketPath(src);
      process.env.SKYSYNC_NATIVE_PATH = link;
      expect(watchSocketPath(src)).toBe(direct);
      expect(watchSocketPath(src + '-other')).not.toBe(direct);
    } finally {
      if (before === undefined) delete process.env.SKYSYNC_NATIVE_PATH;
      else process.env.SKYSYNC_NATIVE_PATH = before;
      delete process.env.SKYSYNC_STATE_DIR;
    }
  });

  it('saves the token on a no-op push after an ignored file came and went', async () => {
    const src = path.join(work(), 'churn-src');
    const home = path.join(work(), 'churn-home');
    // Its own state, apart from the other case's (which looks for any saved token).
    const own = { SKYSYNC_STATE_DIR: path.join(work(), 'state-churn') };
    fs.mkdirSync(path.join(src, 'build'), { recursive: true });
    fs.writeFileSync(path.join(src, '.gitignore'), '*.log\n');
    for (let f = 0; f < 5; f++) fs.writeFileSync(path.join(src, `build/f${f}.txt`), `file ${f}\n`);
    expect(push(src, home, own).scan).toBe('full');
    process.env.SKYSYNC_STATE_DIR = own.SKYSYNC_STATE_DIR;
    try {
      for (let i = 0; i < 400 && !(await askWatch(src, null))?.token; i++) await new Promise((r) => setTimeout(r, 50));
      fs.writeFileSync(path.join(src, 'build/run.log'), 'a build wrote this\n');
      fs.rmSync(path.join(src, 'build/run.log'));
      const tokenSaved = (): boolean => {
        const dir = path.join(own.SKYSYNC_STATE_DIR, 'push');
        return fs.readdirSync(dir).some((d) => {
          const st = JSON.parse(fs.readFileSync(path.join(dir, d, 'state.json'), 'utf8')) as { source?: string; watch?: { token?: string } };
          return st.source === src && !!st.watch?.token;
        });
      };
      // (On a loaded machine the service may answer too late for one push: that push just scans in full.)
      for (let i = 0; i < 5 && !tokenSaved(); i++) expect(push(src, home, own)).toMatchObject({ scan: 'full', filesChanged: 0 });
      expect(tokenSaved()).toBe(true);
      expect(push(src, home, own)).toMatchObject({ scan: 'watch', scanDirs: 0, filesChanged: 0 });
    } finally {
      delete process.env.SKYSYNC_STATE_DIR;
    }
  });

  it('scans only what changed once the service runs, an edit arrives, and a dead service means a full scan', async () => {
    const src = path.join(work(), 'cli-src');
    const home = path.join(work(), 'cli-home');
    for (let d = 0; d < 20; d++) {
      fs.mkdirSync(path.join(src, `d${d}/sub`), { recursive: true });
      for (let f = 0; f < 5; f++) fs.writeFileSync(path.join(src, `d${d}/sub/f${f}.txt`), `file ${d}/${f}\n`);
    }
    const first = push(src, home);
    expect(first.scan).toBe('full');
    expect(first.filesChanged).toBe(100);
    // The first push started the service; it answers once its first walk is done.
    process.env.SKYSYNC_STATE_DIR = env().SKYSYNC_STATE_DIR;
    try {
      for (let i = 0; i < 400 && !(await askWatch(src, null))?.token; i++) await new Promise((r) => setTimeout(r, 50));
      // This push gets a token before scanning; nothing changed, so the saved tree is vouched for from then on.
      // (On a loaded machine the service may answer too late for one push: that push just scans in full.)
      const saved = (): boolean => {
        const dir = path.join(env().SKYSYNC_STATE_DIR!, 'push');
        return fs.readdirSync(dir).some((d) => !!JSON.parse(fs.readFileSync(path.join(dir, d, 'state.json'), 'utf8')).watch?.token);
      };
      for (let i = 0; i < 5 && !saved(); i++) {
        const second = push(src, home);
        expect(second.scan).toBe('full');
        expect(second.filesChanged).toBe(0);
      }
      expect(saved()).toBe(true);

      fs.writeFileSync(path.join(src, 'd7/sub/f3.txt'), 'edited between pushes\n');
      const third = push(src, home);
      expect(third.scan, third.scanReason).toBe('watch');
      expect(third.scanDirs).toBe(1);
      expect(third.filesChanged).toBe(1);
      expect(third.filesScanned).toBe(100);
      expect(fs.readFileSync(path.join(home, 'sky_workdir/d7/sub/f3.txt'), 'utf8')).toBe('edited between pushes\n');

      fs.mkdirSync(path.join(src, 'new/deep'), { recursive: true });
      fs.writeFileSync(path.join(src, 'new/deep/n.txt'), 'new\n');
      fs.rmSync(path.join(src, 'd3'), { recursive: true });
      const fourth = push(src, home);
      expect(fourth.scan).toBe('watch');
      expect(fourth.filesChanged).toBe(1);
      expect(fs.readFileSync(path.join(home, 'sky_workdir/new/deep/n.txt'), 'utf8')).toBe('new\n');
      expect(fs.existsSync(path.join(home, 'sky_workdir/d3'))).toBe(false);

      const noop = push(src, home);
      expect(noop).toMatchObject({ scan: 'watch', scanDirs: 0, filesChanged: 0 });

      // Watching off: a full scan, and no word about why.
      const off = push(src, home, { SKYSYNC_WATCH_PERSIST: '0' });
      expect(off.scan).toBe('full');
      expect(off.scanReason).toBeUndefined();

      // A service that died (its socket left behind) is noticed: a full scan, and a new service.
      const status = await watchStatus(src);
      expect(status?.pid).toBeGreaterThan(0);
      process.kill(status!.pid, 'SIGKILL');
      // Gone, not just signalled: on a busy machine a process in the middle of a system call dies a little later.
      const alive = (): boolean => {
        try {
          // A zombie (state Z, not reaped yet) is dead for this purpose.
          return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${status!.pid}/stat`, 'utf8'));
        } catch {
          return false;
        }
      };
      for (let i = 0; i < 200 && alive(); i++) await new Promise((r) => setTimeout(r, 25));
      expect(alive()).toBe(false);
      fs.writeFileSync(path.join(src, 'd1/sub/f1.txt'), 'edited while nobody watched\n');
      const after = push(src, home);
      expect(after.scan).toBe('full');
      expect(after.filesChanged).toBe(1);
      expect(fs.readFileSync(path.join(home, 'sky_workdir/d1/sub/f1.txt'), 'utf8')).toBe('edited while nobody watched\n');
      for (let i = 0; i < 400 && !(await askWatch(src, null))?.token; i++) await new Promise((r) => setTimeout(r, 50));
      expect((await watchStatus(src))?.pid).not.toBe(status!.pid);
    } finally {
      // The service ends on its own time after `stop`: wait for it, or it may still write into the state
      // directory while the scratch directory is removed.
      const last = await watchStatus(src);
      await stopWatch(src);
      const alive = (): boolean => {
        try {
          if (!last) return false;
          process.kill(last.pid, 0);
          return true;
        } catch {
          return false;
        }
      };
      for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 50));
      delete process.env.SKYSYNC_STATE_DIR;
    }
  });
});
