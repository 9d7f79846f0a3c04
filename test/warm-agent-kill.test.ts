// An agent killed with kill -9, between pushes and in the middle of one, for a warm `local:` target (the agent
// kept by the background process) and over SSH (direct and warm): no command waits forever (each has a deadline
// here), one that fails says why in one line, and the next push leaves an exact mirror. Seeded (SKYSYNC_SEED
// replays a run; the seed is printed on failure); SKYSYNC_KILL_ROUNDS for more rounds.

import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng, seedFromEnv } from './helpers/random.js';
import { scratchDir } from './helpers/scratch.js';
import { sshSkipReason, startNodes, type SshCluster } from './helpers/sshd.js';
import { diffItems, walk } from './helpers/tree.js';

const BIN = path.resolve('packages/cli/dist/bin.js');
const work = scratchDir('skysync-agent-kill-');
const DEADLINE_MS = 60_000;
const ROUNDS = Number(process.env.SKYSYNC_KILL_ROUNDS || 2);
const sshSkip = sshSkipReason();

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

interface Run {
  done: Promise<Outcome>;
  /** Resolves once the scan is reported: data flows from then on. */
  sending: Promise<void>;
}

/** Runs the CLI; past the deadline it is killed and reported as timed out (the defect this file is about). */
function skysync(args: string[], env: NodeJS.ProcessEnv): Run {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  // The moment a killed agent leaves the client with a full send buffer.
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

/** Signals (default: kill -9) every process whose command line matches `pattern`. */
function killAll(pattern: string, signal: NodeJS.Signals = 'SIGKILL'): number {
  const pids = spawnSync('pgrep', ['-f', pattern], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
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

interface Setup {
  /** The push command's arguments before `-w SRC`. */
  push: string[];
  env: NodeJS.ProcessEnv;
  dest: string;
  /** pgrep -f pattern of the agents serving this target. */
  agents: string;
}

/**
 * Rounds of: kill the kept agent, push; push and kill its agent midway (or stop it: SIGSTOP, a wedged agent), push
 * again.
 */
async function killRounds(name: string, s: Setup, midway: NodeJS.Signals = 'SIGKILL', rounds = ROUNDS): Promise<void> {
  const seed = seedFromEnv();
  const rng = new Rng(seed);
  const src = path.join(work(), `src-${name}`);
  const push = (): Run => skysync([...s.push, '-w', src, '--delete'], s.env);
  const context = (what: string, r: Outcome): string => `seed ${seed} (SKYSYNC_SEED=${seed} replays it): ${name}: ${what}: exit ${r.code}, ${r.stderr.trim()}`;
  const converges = async (what: string): Promise<void> => {
    const r = await push().done;
    expect(r.timedOut, context(`${what} hung`, r)).toBe(false);
    expect(r.code, context(what, r)).toBe(0);
    expect(diffItems(walk(src), walk(s.dest, { skip: notTemp }), { mtime: false }), context(`${what}: mirror`, r)).toEqual([]);
  };

  writeTree(src, rng, 0);
  await converges('first push');
  for (let round = 1; round <= rounds; round++) {
    // A kept agent (warm targets) dies between commands.
    killAll(s.agents);
    writeTree(src, rng, round);
    await converges(`round ${round}: push after the agent was killed`);

    // And in the middle of a push: that push may fail (in one line), but it ends.
    writeTree(src, rng, round);
    const p = push();
    await p.sending;
    // Stopped while data flows, so the client has bytes the agent does not take.
    await new Promise((r) => setTimeout(r, midway === 'SIGKILL' ? rng.int(250) : 0));
    killAll(s.agents, midway);
    const r = await p.done;
    // A stopped agent holds the destination's lock: it goes, as an operator would make it go.
    if (midway !== 'SIGKILL') killAll(s.agents);
    expect(r.timedOut, context(`round ${round}: push whose agent was killed hung`, r)).toBe(false);
    if (r.code !== 0)
      expect(
        r.stderr.split('\n').filter((l) => l.startsWith('error:')),
        context(`round ${round}: killed push`, r),
      ).toHaveLength(1);
    if (process.env.SKYSYNC_DEBUG_TEST) console.log(`${name} round ${round}: exit ${r.code}: ${r.stderr.trim().split('\n').pop()}`);
    await converges(`round ${round}: push after a killed one`);
  }
}

describe('an agent killed with kill -9', () => {
  const state = (): string => path.join(work(), 'state');

  it('local, warm: never leaves a push waiting, and the next push mirrors exactly', async () => {
    const home = path.join(work(), 'home');
    const env = { SKYSYNC_STATE_DIR: state(), SKYSYNC_CONTROL_PERSIST: '60', SKYSYNC_WATCH_PERSIST: '0' };
    try {
      await killRounds('local', { push: ['push', `local:${home}`], env, dest: path.join(home, 'sky_workdir'), agents: `agent.cjs serve --home ${home}$` });
    } finally {
      spawnSync(process.execPath, [BIN, 'disconnect', `local:${home}`], { env: { ...process.env, ...env }, timeout: 20_000 });
    }
  });

  it('local, warm, stopped (SIGSTOP) while data flows: the push gives up on the agent within its deadline', async () => {
    const home = path.join(work(), 'home-stopped');
    const env = { SKYSYNC_STATE_DIR: state(), SKYSYNC_CONTROL_PERSIST: '60', SKYSYNC_WATCH_PERSIST: '0', SKYSYNC_AGENT_IDLE_TIMEOUT: '3' };
    try {
      await killRounds('local-stopped', { push: ['push', `local:${home}`], env, dest: path.join(home, 'sky_workdir'), agents: `agent.cjs serve --home ${home}$` }, 'SIGSTOP', 1);
    } finally {
      spawnSync(process.execPath, [BIN, 'disconnect', `local:${home}`], { env: { ...process.env, ...env }, timeout: 20_000 });
    }
  });

  describe.skipIf(sshSkip !== null)('over SSH', () => {
    let cluster: SshCluster;
    beforeAll(async () => {
      cluster = await startNodes(3, { cluster: 'sky-kill' });
    }, 120_000);
    afterAll(async () => {
      await cluster?.stop();
    });

    // Workers, not the head: the head's name means the whole cluster.
    for (const [mode, node, persist] of [
      ['direct', 1, '0'],
      ['warm', 2, '60'],
    ] as const) {
      it(`${mode}: never leaves a push waiting, and the next push mirrors exactly`, async () => {
        const n = cluster.nodes[node]!;
        const env = { SKYSYNC_STATE_DIR: state(), SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: persist, SKYSYNC_WATCH_PERSIST: '0' };
        const push = ['-F', cluster.sshConfig, 'push', n.name, '--dest', '~/mirror'];
        try {
          await killRounds(`ssh-${mode}`, { push, env, dest: path.join(n.home, 'mirror'), agents: `${n.home}/.skysync/agent/.*\\.cjs serve` });
        } finally {
          spawnSync(process.execPath, [BIN, '-F', cluster.sshConfig, 'disconnect', n.name], { env: { ...process.env, ...env }, timeout: 20_000 });
        }
      });
    }
  });
});
