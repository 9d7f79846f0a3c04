// ISSUE22 suite, kill points: a push of thousands of small files and a few large ones, with the client (the
// skysync process), the agent, or the connection (the sshd processes serving the session) killed with -9 at a
// random moment, locally (`local:`) and over the sshd harness. The source changes between pushes (edits, new,
// removed and renamed files, rewritten regions of the large ones), so a kill hits real updates. After each kill:
// no command hangs (each has a deadline), a push that fails says so in one line, no file at a final path is torn
// (each equals its old or its new content), and the next push leaves an exact mirror with no temp file anywhere.
//
// Seeded: SKYSYNC_SEED replays a run (the seed is printed on failure). Knobs: SKYSYNC_KILL_POINTS (kills in all,
// default 30: 40% local, the rest over SSH), SKYSYNC_KILL_FILES (small files, default 2000),
// SKYSYNC_KILL_BIG_MIB (size of each of the 3 large files, default 4), SKYSYNC_KILL_VICTIMS (say, `connection`),
// SKYSYNC_KILL_DEADLINE_MS (each command's deadline, default 90 s).

import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentPids, BIN, type CliRun, errorLines, kill, type Outcome, runCli, skipTemps, sleep, sshdSessionPids, tempPaths, tornFiles, waitGone } from './helpers/faults.js';
import { Rng, seedFromEnv } from './helpers/random.js';
import { scratchDir } from './helpers/scratch.js';
import { sshSkipReason, startNodes, type SshCluster } from './helpers/sshd.js';
import { diffItems, type Item, listTree, walk } from './helpers/tree.js';

const KILL_POINTS = Number(process.env.SKYSYNC_KILL_POINTS || 30);
const SMALL_FILES = Number(process.env.SKYSYNC_KILL_FILES || 2000);
const BIG_BYTES = Number(process.env.SKYSYNC_KILL_BIG_MIB || 4) * (1 << 20);
const DEADLINE_MS = Number(process.env.SKYSYNC_KILL_DEADLINE_MS || 90_000);
/** Only these victims (comma-separated: client, agent, connection), to aim a long run at one of them. */
const VICTIMS = process.env.SKYSYNC_KILL_VICTIMS?.split(',');
/** How long an agent may outlive its killed client or connection before it counts as leaked. */
const AGENT_EXIT_MS = 20_000;
const sshSkip = sshSkipReason();
const SEED = seedFromEnv();
const work = scratchDir('skysync-kill-points-');

type Victim = 'client' | 'agent' | 'connection';

interface Setup {
  name: string;
  /** The push command's arguments before `-w SRC`. */
  push: string[];
  env: NodeJS.ProcessEnv;
  dest: string;
  victims: Victim[];
  agents: () => number[];
  connections: () => number[];
  /** Where the agent (first) and the client keep their state (temp files of a state save cut short are looked for). */
  stateDirs: string[];
}

interface Tally {
  kills: Record<Victim, number>;
  /** Pushes that finished before the chosen moment came. */
  missed: number;
  /** Kills after which the destination held temp files for the next push to sweep. */
  withTemps: number;
  /**
   * Temp files of state saves cut short (the agent's and the client's: `*.tmp`, `*.tmp<pid>`, `state.json.<hex>`)
   * still there at the end: reported, not (yet) a failure.
   */
  stateTemps: string[];
}

function writeInitialTree(src: string, rng: Rng): void {
  for (let i = 0; i < SMALL_FILES; i++) {
    const f = path.join(src, `d${i % 40}`, `e${i % 5}`, `f${i}.txt`);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, rng.bytes(rng.int(8000)));
  }
  for (let k = 0; k < 3; k++) fs.writeFileSync(path.join(src, `d${k}`, `big${k}.bin`), rng.bytes(BIG_BYTES + rng.int(1 << 16)));
}

/** Edits, adds, removes and renames files of `src` at random; the large files get a region rewritten or grow. */
function mutate(src: string, rng: Rng, round: number, current: Map<string, Item>): void {
  const files = [...current].filter(([, it]) => it.type === 'file').map(([p]) => p);
  for (const rel of files) {
    const abs = path.join(src, rel);
    if (rel.endsWith('.bin')) {
      if (!rng.chance(0.7)) continue;
      const fd = fs.openSync(abs, 'r+');
      try {
        const size = current.get(rel)!.size;
        // Rewrites may grow it; past twice its size it starts over, so it stays a few MiB.
        if (size > 2 * BIG_BYTES) fs.ftruncateSync(fd, BIG_BYTES);
        const at = rng.int(Math.max(1, Math.min(size, BIG_BYTES)));
        fs.writeSync(fd, rng.bytes(rng.chance(0.3) ? BIG_BYTES : 1 + rng.int(1 << 18)), 0, undefined, at);
      } finally {
        fs.closeSync(fd);
      }
      continue;
    }
    const roll = rng.next();
    if (roll < 0.25) fs.writeFileSync(abs, rng.bytes(rng.int(8000)));
    else if (roll < 0.28) fs.rmSync(abs);
    else if (roll < 0.3) fs.renameSync(abs, path.join(path.dirname(abs), `moved${round}-${path.basename(abs)}`));
    else if (roll < 0.31) fs.chmodSync(abs, rng.pick([0o600, 0o644, 0o755]));
  }
  for (let i = 0, n = Math.ceil(SMALL_FILES * 0.03); i < n; i++) {
    const f = path.join(src, `d${rng.int(40)}`, `new${round}`, `n${i}.txt`);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, rng.bytes(rng.int(8000)));
  }
}

function pidsOf(victim: Victim, s: Setup, client: number): number[] {
  if (victim === 'client') return [client];
  return victim === 'agent' ? s.agents() : s.connections();
}

/**
 * Kills `victim` at `delayMs` into the push, or into its sending phase (or as soon as the victim exists after
 * that); false if the push ended first.
 */
async function killAt(victim: Victim, delayMs: number, s: Setup, run: CliRun, fromSending: boolean): Promise<boolean> {
  let ended = false;
  const { done, pid: client } = run;
  void done.then(() => (ended = true));
  if (fromSending) await run.sending;
  await Promise.race([done, sleep(delayMs)]);
  while (!ended) {
    if (kill(pidsOf(victim, s, client))) return true;
    await sleep(5);
  }
  return false;
}

async function killRounds(s: Setup, kills: number, tally: Tally): Promise<void> {
  const seed = SEED;
  const rng = new Rng(seed ^ s.name.length);
  const src = path.join(work(), `src-${s.name}`);
  const ctx = (what: string, r?: Outcome): string =>
    `seed ${seed} (SKYSYNC_SEED=${seed} replays it): ${s.name}: ${what}` +
    (r ? `: exit ${r.code ?? r.signal}, ${r.stderr.trim()}${r.hangReport ? `\nprocesses at the deadline:\n${r.hangReport}` : ''}` : '');
  const push = (mirror: boolean) => runCli([...s.push, '-w', src, ...(mirror ? ['--delete'] : [])], s.env, DEADLINE_MS);
  const converge = async (what: string, expected: Map<string, Item>): Promise<Outcome> => {
    const r = await push(rng.chance(0.5)).done;
    expect(r.timedOut, ctx(`${what} hung`, r)).toBe(false);
    expect(r.code, ctx(what, r)).toBe(0);
    expect(tempPaths(s.dest), ctx(`${what}: temp files left`, r)).toEqual([]);
    expect(diffItems(expected, walk(s.dest), { mtime: false }), ctx(`${what}: mirror`, r)).toEqual([]);
    return r;
  };

  writeInitialTree(src, rng);
  let old = walk(src);
  // How far into a push a kill may come: about how long a push of changes takes, learned as rounds go.
  let span = (await converge('first push', old)).ms;
  let killed = 0;
  for (let attempt = 0; killed < kills && attempt < kills * 3; attempt++) {
    mutate(src, rng, attempt, old);
    const next = walk(src);
    const victim = rng.pick(VICTIMS ? s.victims.filter((v) => VICTIMS.includes(v)) : s.victims);
    const run = push(rng.chance(0.5));
    // Half the kills come while data flows (after the scan), where apply has temp files open.
    const fromSending = rng.chance(0.5);
    const hit = await killAt(victim, rng.int(fromSending ? span / 2 : span), s, run, fromSending);
    const r = await run.done;
    const what = `attempt ${attempt}: ${victim} killed`;
    expect(r.timedOut, ctx(`${what}: the push hung`, r)).toBe(false);
    if (!hit) {
      tally.missed++;
      span = Math.max(100, Math.min(span, r.ms) * 0.8);
    } else {
      killed++;
      tally.kills[victim]++;
      if (victim !== 'client' && r.code !== 0) expect(errorLines(r.stderr), ctx(`${what}: one error line`, r)).toHaveLength(1);
    }
    // A kill ends the whole sync: no agent may go on writing (or holding the lock) once its client or session is gone.
    expect(await waitGone(s.agents, AGENT_EXIT_MS), ctx(`${what}: agents still running ${AGENT_EXIT_MS} ms later`, r)).toEqual([]);
    const allowed = (rel: string): Set<string> => new Set([old.get(rel)?.sha, next.get(rel)?.sha].filter((x): x is string => !!x));
    expect(tornFiles(walk(s.dest, { skip: skipTemps }), allowed), ctx(`${what}: torn files`, r)).toEqual([]);
    if (tempPaths(s.dest).length) tally.withTemps++;
    if (process.env.SKYSYNC_DEBUG_TEST)
      console.log(`${s.name} ${what} ${hit ? 'hit' : 'missed'}${fromSending ? ' (from sending)' : ''} after ${r.ms} ms: exit ${r.code ?? r.signal}`);
    await converge(`${what}: the next push`, next);
    old = next;
  }
  tally.stateTemps = s.stateDirs.flatMap((d) => listTree(d).files.map((f) => path.join(d, f))).filter((f) => /\.tmp\d*$|state\.json\.[0-9a-f]{8}$/.test(f));
  // The agent sweeps its own (a push that takes over a dead holder's lock); the client's are only counted.
  expect(
    tally.stateTemps.filter((f) => f.startsWith(s.stateDirs[0]!)),
    ctx('temp files of the agent state left'),
  ).toEqual([]);
  expect(killed, ctx(`only ${killed} of ${kills} kills landed (the pushes ended first)`)).toBe(kills);
}

function report(name: string, t: Tally): void {
  console.log(
    `kill points ${name}: ${t.kills.client + t.kills.agent + t.kills.connection} kills (client ${t.kills.client}, agent ${t.kills.agent}, connection ${t.kills.connection}), ` +
      `${t.missed} pushes ended first, ${t.withTemps} kills left temp files for the next push, ${t.stateTemps.length} state temp files left${t.stateTemps.length ? ` (${t.stateTemps.slice(0, 3).join(', ')})` : ''} (seed ${SEED})`,
  );
}

const newTally = (): Tally => ({ kills: { client: 0, agent: 0, connection: 0 }, missed: 0, withTemps: 0, stateTemps: [] });
const localKills = Math.ceil(KILL_POINTS * (sshSkip ? 1 : 0.4));
/** Each test's time: grows with a long run's kills (each costs two pushes), never below the CI run's 15 minutes. */
const RUN_MS = Math.max(900_000, Math.max(localKills, KILL_POINTS - localKills) * 20_000);
const env = (): NodeJS.ProcessEnv => ({ SKYSYNC_STATE_DIR: path.join(work(), 'state'), SKYSYNC_CONTROL_PERSIST: '0', SKYSYNC_WATCH_PERSIST: '0', SSH_AUTH_SOCK: '' });

describe('kill -9 of the client, the agent or the connection at random moments of a push', { timeout: RUN_MS }, () => {
  it(`local: ${localKills} kills, no torn file, no hang, the next push mirrors exactly (seeded)`, async () => {
    const home = path.join(work(), 'home');
    const tally = newTally();
    const mine = (argv: string[]): boolean => argv[argv.indexOf('--home') + 1] === home;
    try {
      await killRounds(
        {
          name: 'local',
          push: ['push', `local:${home}`],
          env: env(),
          dest: path.join(home, 'sky_workdir'),
          victims: ['client', 'agent'],
          agents: () => agentPids(mine),
          connections: () => [],
          stateDirs: [path.join(home, '.skysync'), path.join(work(), 'state')],
        },
        localKills,
        tally,
      );
    } finally {
      report('local', tally);
    }
  });

  describe.skipIf(sshSkip !== null)('over SSH', () => {
    let cluster: SshCluster;
    beforeAll(async () => {
      cluster = await startNodes(2, { cluster: 'sky-killpt' });
    }, 120_000);
    afterAll(async () => {
      await cluster?.stop();
    });

    it(`${KILL_POINTS - localKills} kills of client, agent and sshd session, no torn file, no hang, the next push mirrors exactly (seeded)`, async () => {
      // A worker, not the head: the head's name means the whole cluster.
      const n = cluster.nodes[1]!;
      const uid = fs.statSync(n.home).uid;
      const tally = newTally();
      const mine = (argv: string[]): boolean => argv.some((a) => a.startsWith(`${n.home}/.skysync/agent/`));
      try {
        await killRounds(
          {
            name: 'ssh',
            push: ['-F', cluster.sshConfig, 'push', n.name, '--dest', '~/mirror'],
            env: env(),
            dest: path.join(n.home, 'mirror'),
            victims: ['client', 'agent', 'connection'],
            agents: () => agentPids(mine),
            connections: () => sshdSessionPids(uid),
            stateDirs: [path.join(n.home, '.skysync'), path.join(work(), 'state')],
          },
          KILL_POINTS - localKills,
          tally,
        );
      } finally {
        report('ssh', tally);
        spawnSync(process.execPath, [BIN, '-F', cluster.sshConfig, 'disconnect', n.name], { env: { ...process.env, ...env() }, timeout: 20_000 });
      }
    });
  });
  if (sshSkip) console.log(`kill points over SSH skipped: ${sshSkip}`);
});
