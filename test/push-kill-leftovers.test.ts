// ISSUE22 defect 3: an agent killed with -9 in the middle of a push leaves temp files (up to a whole large file
// each). The next push must remove them, and leave an exact mirror with no temp file anywhere. Seeded
// (SKYSYNC_SEED), with SKYSYNC_KILL_ROUNDS rounds.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNative } from '@skysync/chunking';
import { push } from '@skysync/engine';
import { LocalTarget } from '@skysync/transport';
import { Rng, seedFromEnv } from './helpers/random.js';
import { diffItems, walk } from './helpers/tree.js';

const native = loadNative()!;
const ROUNDS = Number(process.env.SKYSYNC_KILL_ROUNDS ?? 3);
let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-kill-'));
  process.env.SKYSYNC_STATE_DIR = path.join(work, 'state');
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

/** The agents serving `home`, by their command lines. */
function agentsOf(home: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      if (argv.includes('serve') && argv[argv.indexOf('--home') + 1] === home) out.push(Number(p));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

function temps(root: string): string[] {
  const out: string[] = [];
  const visit = (dir: string): void => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const abs = path.join(dir, d.name);
      if (d.name.startsWith('.skysync-') && d.name !== '.skysync') out.push(path.relative(root, abs));
      else if (d.isDirectory()) visit(abs);
    }
  };
  visit(root);
  return out;
}

function makeSource(src: string, rng: Rng, round: number): void {
  for (let i = 0; i < 1500; i++) {
    const dir = path.join(src, `d${i % 30}`, `e${i % 7}`);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, `f${round}-${i}`), rng.bytes(rng.int(4000)));
  }
  for (let i = 0; i < 3; i++) fs.writeFileSync(path.join(src, `d${i}`, `big${round}-${i}`), rng.bytes((24 << 20) + rng.int(1 << 20)));
}

describe('an agent killed with -9 in the middle of a push', () => {
  it('leaves nothing behind once the next push ran: exact mirror, no temp file (seeded)', async () => {
    const seed = seedFromEnv();
    const rng = new Rng(seed);
    const src = path.join(work, 'src');
    const home = path.join(work, 'home');
    const dest = path.join(home, 'sky_workdir');
    fs.mkdirSync(dest, { recursive: true });
    const target = new LocalTarget('local:' + home, home);
    let killsWithLeftovers = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const why = `seed ${seed} (SKYSYNC_SEED=${seed} replays it), round ${round}`;
      makeSource(src, rng, round);
      const pushing = push({ source: src, target, native }).then(
        () => 'finished',
        () => 'failed',
      );
      // Kill the agent once its temp files are on disk (or the push finished first).
      let killed = false;
      const deadline = Date.now() + 60_000;
      while (!killed && Date.now() < deadline) {
        const pending = await Promise.race([pushing, new Promise((r) => setTimeout(() => r(null), 2))]);
        if (pending) break;
        if (fs.existsSync(dest) && temps(dest).length) {
          for (const pid of agentsOf(home)) process.kill(pid, 'SIGKILL');
          killed = true;
        }
      }
      const outcome = await pushing;
      if (killed) {
        expect(outcome, why).toBe('failed');
        if (temps(dest).length) killsWithLeftovers++;
      }
      const again = await push({ source: src, target, native });
      expect(again.failed, why).toEqual([]);
      expect(temps(dest), why).toEqual([]);
      expect(diffItems(walk(src), walk(dest), { mtime: false }), why).toEqual([]);
    }
    // Otherwise the test proved nothing: the kills must have left temp files for the next push to sweep.
    expect(killsWithLeftovers, `seed ${seed}`).toBeGreaterThan(0);
  }, 600_000);
});
