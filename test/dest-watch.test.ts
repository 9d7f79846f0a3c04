// The destination's watch service, end to end through the CLI and a local target with no warm connection (a new
// agent every push, as over SSH with SKYSYNC_CONTROL_PERSIST=0). Once the service vouches for the destination, a
// push checks for drift only where something changed; whatever a job did on the node must still be found. A seeded
// random run changes the destination between pushes and compares the drift each push reports with what it did.

import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { watchServiceStatus } from '@skysync/service';
import { Rng, seedFromEnv } from './helpers/random.js';
import { scratchDir } from './helpers/scratch.js';
import { listTree } from './helpers/tree.js';

const BIN = path.resolve('packages/cli/dist/bin.js');
const work = scratchDir('skysync-dest-watch-');
const linux = process.platform === 'linux';

interface PushResult {
  drift: string[];
  trace: string;
}

function push(src: string, home: string, extra: NodeJS.ProcessEnv = {}): PushResult {
  const env = {
    ...process.env,
    SKYSYNC_STATE_DIR: path.join(work(), 'state'),
    SKYSYNC_CONTROL_PERSIST: '0',
    SKYSYNC_WATCH_PERSIST: '120',
    SKYSYNC_TRACE: '1',
    ...extra,
  };
  const r = spawnSync(process.execPath, [BIN, 'push', `local:${home}`, '-w', src, '--json'], { encoding: 'utf8', env });
  expect(r.status, r.stderr).toBe(0);
  const out = JSON.parse(r.stdout) as { drift: string[] };
  return { drift: [...out.drift].sort(), trace: r.stderr };
}

const limited = (r: PushResult): boolean => /agent: drift check limited to/.test(r.trace);
const fullCheck = (r: PushResult): string | null => /agent: full drift check \((.*)\)/.exec(r.trace)?.[1] ?? null;

function serviceSocket(home: string): string | null {
  const dir = path.join(home, '.skysync', 'run');
  const names = fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => /^watch-[0-9a-f]+\.sock$/.test(n)) : [];
  return names.length === 1 ? path.join(dir, names[0]!) : null;
}

async function waitFor<T>(what: string, probe: () => Promise<T | null> | T | null): Promise<T> {
  for (let i = 0; i < 200; i++) {
    const v = await probe();
    if (v !== null) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Pushes until a push's drift check is limited by the service (a loaded machine may need a push or two more). */
function untilLimited(src: string, home: string): PushResult {
  for (let i = 0; i < 6; i++) {
    const r = push(src, home);
    if (limited(r)) return r;
  }
  throw new Error('no push had its drift check limited by the watch service');
}

function sameTree(a: string, b: string): void {
  const read = (root: string): Record<string, string> => {
    const out: Record<string, string> = {};
    for (const f of listTree(root).files) out[f] = fs.readFileSync(path.join(root, f), 'utf8');
    return out;
  };
  expect(read(b)).toEqual(read(a));
}

describe.runIf(linux)('the destination watch service', () => {
  it('limits the drift check to what changed, and still finds every change a job made on the node', async () => {
    const src = path.join(work(), 'src');
    const home = path.join(work(), 'home');
    const dest = path.join(home, 'sky_workdir');
    const files: string[] = [];
    for (let d = 0; d < 12; d++) {
      for (let f = 0; f < 6; f++) {
        const rel = `d${d}/s${f % 3}/f${f}.txt`;
        fs.mkdirSync(path.dirname(path.join(src, rel)), { recursive: true });
        fs.writeFileSync(path.join(src, rel), `file ${rel}\n`);
        files.push(rel);
      }
    }
    // The first push places the files (and starts no service: it would only chase those writes); the second one
    // starts it, and it answers once its first walk is done.
    expect(push(src, home).drift).toEqual([]);
    expect(serviceSocket(home)).toBeNull();
    const second = push(src, home);
    expect(fullCheck(second)).toMatch(/not running/);
    const socket = await waitFor('the service', () => serviceSocket(home));
    const first = await waitFor('the service to watch', async () => {
      const s = await watchServiceStatus(socket);
      return s?.state === 'ok' ? s : null;
    });
    const noop = untilLimited(src, home);
    expect(noop.drift).toEqual([]);
    expect(noop.trace).toContain('limited to 0 directories and 0 subtrees');

    const seed = seedFromEnv();
    const rng = new Rng(seed);
    try {
      for (let round = 0; round < 25; round++) {
        // What a job does on the node between two pushes: edits, deletions, new times, the same bytes saved anew.
        const touched = new Set<string>();
        for (let k = rng.int(4); k >= 0; k--) {
          const rel = rng.pick(files);
          const abs = path.join(dest, rel);
          const op = rng.int(4);
          if (op === 0) fs.writeFileSync(abs, `changed on the node in round ${round}\n`);
          else if (op === 1) fs.rmSync(abs, { force: true });
          // Only its time: the same bytes, but not what the agent placed.
          else if (op === 2 && fs.existsSync(abs)) fs.utimesSync(abs, new Date(), new Date(Date.now() - 3600_000 * (1 + rng.int(100))));
          // Written anew with the same bytes (another inode), as an editor that saves by rename does.
          else if (op === 3 && fs.existsSync(abs)) {
            const bytes = fs.readFileSync(abs);
            fs.rmSync(abs);
            fs.writeFileSync(`${abs}.tmp`, bytes);
            fs.renameSync(`${abs}.tmp`, abs);
          }
          touched.add(rel);
        }
        const r = push(src, home);
        expect(limited(r), `round ${round}: ${fullCheck(r)}`).toBe(true);
        // Every change is reported (and repaired): a limited check misses none of them.
        expect(r.drift, `round ${round}`).toEqual([...touched].sort());
        sameTree(src, dest);
      }
    } catch (e) {
      throw new Error(`${(e as Error).message} (SKYSYNC_SEED=${seed})`);
    }
    expect((await watchServiceStatus(socket))?.pid).toBe(first.pid);

    // A service that died: a full check finds what changed meanwhile, and a new service takes over.
    process.kill(first.pid, 'SIGKILL');
    await waitFor('the service to die', () => {
      try {
        return /^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${first.pid}/stat`, 'utf8')) ? true : null;
      } catch {
        return true;
      }
    });
    fs.writeFileSync(path.join(dest, files[0]!), 'changed while nobody watched\n');
    const after = push(src, home);
    expect(fullCheck(after)).toMatch(/not running/);
    expect(after.drift).toEqual([files[0]]);
    const replacement = await waitFor('a new service', async () => {
      const s = await watchServiceStatus(socket);
      return s?.state === 'ok' && s.pid !== first.pid ? s : null;
    });
    // Its first answer cannot vouch for a token of the service before it.
    fs.writeFileSync(path.join(dest, files[1]!), 'changed again\n');
    const next = push(src, home);
    expect(limited(next)).toBe(false);
    expect(next.drift).toEqual([files[1]]);
    expect(untilLimited(src, home).drift).toEqual([]);
    sameTree(src, dest);
    process.kill(replacement.pid, 'SIGTERM');
  });

  it('starts no service when watching is off', () => {
    const src = path.join(work(), 'off-src');
    const home = path.join(work(), 'off-home');
    fs.mkdirSync(path.join(src, 'a'), { recursive: true });
    fs.writeFileSync(path.join(src, 'a/x.txt'), 'x\n');
    for (let i = 0; i < 3; i++) {
      const r = push(src, home, { SKYSYNC_WATCH_PERSIST: '0' });
      expect(limited(r)).toBe(false);
    }
    expect(serviceSocket(home)).toBeNull();
  });
});
