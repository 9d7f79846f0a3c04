// A warm `local:` target whose kept agent is killed (kill -9), between pushes and in the middle of one: no command
// waits forever (each has a deadline here), one that fails says why in one line, and the next push leaves an
// exact mirror. Seeded (SKYSYNC_SEED replays a run; the seed is printed on failure); SKYSYNC_KILL_ROUNDS for more.

import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { Rng, seedFromEnv } from './helpers/random.js';
import { scratchDir } from './helpers/scratch.js';
import { diffItems, walk } from './helpers/tree.js';

const BIN = path.resolve('packages/cli/dist/bin.js');
const work = scratchDir('skysync-warm-kill-');
const DEADLINE_MS = 60_000;
const ROUNDS = Number(process.env.SKYSYNC_KILL_ROUNDS || 4);

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

function env(): NodeJS.ProcessEnv {
  return { ...process.env, SKYSYNC_STATE_DIR: path.join(work(), 'state'), SKYSYNC_CONTROL_PERSIST: '60', SKYSYNC_WATCH_PERSIST: '0' };
}

/** Runs the CLI; past the deadline it is killed and reported as timed out (the defect this file is about). */
function skysync(args: string[]): { done: Promise<Outcome>; sending: Promise<void> } {
  const child = spawn(process.execPath, [BIN, ...args], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  // Data flows once the scan is reported: the moment a killed agent leaves the client with a full send buffer.
  const sending = new Promise<void>((resolve) => {
    child.stderr.on('data', () => stderr.includes('changed') && resolve());
    child.on('close', () => resolve());
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, DEADLINE_MS);
  const done = new Promise<Outcome>((resolve) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    }),
  );
  return { done, sending };
}

function agentPids(home: string): number[] {
  const out = spawnSync('pgrep', ['-f', `agent.cjs serve --home ${home}$`], { encoding: 'utf8' }).stdout;
  return out.split('\n').filter(Boolean).map(Number);
}

function killAgents(home: string): number {
  const pids = agentPids(home);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  return pids.length;
}

function writeTree(root: string, rng: Rng, round: number): void {
  for (let i = 0; i < 1500; i++) {
    // Most files stay; a share changes each round so every push has work to do while it is killed.
    if (round > 0 && !rng.chance(0.3)) continue;
    const f = path.join(root, `d${i % 25}`, `f${i}.txt`);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, rng.bytes(100 + rng.int(12_000)));
  }
  fs.writeFileSync(path.join(root, 'big.bin'), rng.bytes(24 << 20));
}

/** Temp files a killed agent leaves are another defect's (and another test's) business. */
const notTemp = (rel: string): boolean => /(^|\/)\.skysync-[^/]*\.tmp(\/|$)/.test(rel);

describe('a warm local agent killed with kill -9', () => {
  const seed = seedFromEnv();
  const home = (): string => path.join(work(), 'home');
  afterAll(() => {
    spawnSync(process.execPath, [BIN, 'disconnect', `local:${home()}`], { env: env(), timeout: 20_000 });
  });

  it('never leaves a push waiting, and the next push mirrors exactly', async () => {
    const rng = new Rng(seed);
    const src = path.join(work(), 'src');
    const dest = path.join(home(), 'sky_workdir');
    const push = (): ReturnType<typeof skysync> => skysync(['push', `local:${home()}`, '-w', src, '--delete']);
    const context = (what: string, r: Outcome): string => `seed ${seed} (SKYSYNC_SEED=${seed} replays it): ${what}: exit ${r.code}, ${r.stderr.trim()}`;
    const converges = async (what: string): Promise<void> => {
      const r = await push().done;
      expect(r.timedOut, context(`${what} hung`, r)).toBe(false);
      expect(r.code, context(what, r)).toBe(0);
      expect(diffItems(walk(src), walk(dest, { skip: notTemp }), { mtime: false }), context(`${what}: mirror`, r)).toEqual([]);
    };

    writeTree(src, rng, 0);
    await converges('first push');
    // The first push leaves a background process with an agent kept ready.
    for (let i = 0; i < 50 && agentPids(home()).length === 0; i++) await new Promise((r) => setTimeout(r, 100));

    for (let round = 1; round <= ROUNDS; round++) {
      // The kept agent dies between commands.
      killAgents(home());
      writeTree(src, rng, round);
      await converges(`round ${round}: push after the kept agent was killed`);

      // And in the middle of a push: that push may fail (in one line), but it ends.
      writeTree(src, rng, round);
      const p = push();
      await p.sending;
      await new Promise((r) => setTimeout(r, rng.int(250)));
      killAgents(home());
      const r = await p.done;
      expect(r.timedOut, context(`round ${round}: push whose agent was killed hung`, r)).toBe(false);
      if (r.code !== 0) expect(r.stderr.split('\n').filter((l) => l.startsWith('error:')), context(`round ${round}: killed push`, r)).toHaveLength(1);
      await converges(`round ${round}: push after a killed one`);
    }
  });
});
