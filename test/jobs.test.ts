// Detached jobs on a three-node cluster of real sshd servers (SkyPilot-shaped SSH config): `exec -d` and
// `launch -d` start a job that outlives its SSH connection, `logs [-f]` gives every node's output, `jobs` the
// states and exit codes, `cancel` stops the job's whole process group on every node.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sshSkipReason, startNodes, type SshCluster, writeSkyPilotConfig } from './helpers/sshd.js';

const skip = sshSkipReason();
if (skip) console.log(`SKIP jobs.test.ts: ${skip}`);
const BIN = path.resolve('packages/cli/dist/bin.js');

let work: string;
let cluster: SshCluster;
let cfg: string;

function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state'), SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: '0', ...extra };
}

function skysync(args: string[], extra: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [BIN, '-F', cfg, ...args], { encoding: 'utf8', timeout: 120_000, cwd: work, env: env(extra) });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function submittedId(stderr: string): number {
  const m = /Job submitted, ID: (\d+)/.exec(stderr);
  expect(m, stderr).not.toBeNull();
  return Number(m![1]);
}

interface JobJson {
  id: number;
  state: string;
  exitCode: number | null;
  nodes: Array<{ node: string; rank: number; state: string; exitCode: number | null }>;
}

function job(id: number): JobJson {
  const r = skysync(['jobs', 'sky-j', '--json']);
  expect(r.code, r.stderr).toBe(0);
  const found = (JSON.parse(r.stdout) as { jobs: JobJson[] }).jobs.find((j) => j.id === id);
  expect(found, r.stdout).toBeDefined();
  return found!;
}

async function waitFor(cond: () => boolean, what: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  expect(cond(), what).toBe(true);
}

function pids(args: string[]): number[] {
  return spawnSync('pgrep', args, { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
}

/** The live processes of a process group (a zombie waiting for this machine's init to reap it runs nothing). */
function liveInGroup(pgid: number): string[] {
  const ps = spawnSync('ps', ['-o', 'pid=,stat=,args=', '-g', String(pgid)], { encoding: 'utf8' }).stdout;
  return ps.split('\n').filter((l) => l.trim() && !/^\s*\d+\s+Z/.test(l));
}

describe.skipIf(!!skip)('detached jobs on a cluster', () => {
  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-jobs-'));
    fs.chmodSync(work, 0o755);
    cluster = await startNodes(3, { cluster: 'sky-j', strictHostKeyChecking: 'no' });
    cfg = writeSkyPilotConfig(work, 'sky-j', cluster, { extra: ['ServerAliveInterval 5'], common: ['ConnectTimeout 20'] });
  }, 180_000);

  afterAll(async () => {
    await cluster?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('a detached job survives its SSH connections being cut, and its logs are complete afterwards', async () => {
    const script = 'for i in $(seq 1 25); do echo "r$SKYPILOT_NODE_RANK line $i"; sleep 0.2; done';
    const started = skysync(['exec', 'sky-j', '-d', '--', script]);
    expect(started.code, started.stderr).toBe(0);
    const id = submittedId(started.stderr);

    // A follower whose client dies, then every sshd session process of every node killed (its connections
    // among them): what a laptop going to sleep does to them.
    const follower = spawn(process.execPath, [BIN, '-F', cfg, 'logs', 'sky-j', String(id), '-f'], { cwd: work, env: env() });
    let seen = '';
    let followerErr = '';
    follower.stdout.on('data', (d: Buffer) => (seen += d.toString()));
    follower.stderr.on('data', (d: Buffer) => (followerErr += d.toString()));
    await waitFor(() => /r2 line 2\b/.test(seen), `the follower saw output: ${seen} ${followerErr}`, 30_000);
    follower.kill('SIGKILL');
    let cut = 0;
    for (const n of cluster.nodes) {
      for (const pid of pids(['-u', n.user, 'sshd'])) {
        process.kill(pid, 'SIGKILL');
        cut++;
      }
    }
    expect(cut).toBeGreaterThanOrEqual(3);
    expect(job(id).state).toBe('RUNNING');

    await waitFor(() => job(id).state !== 'RUNNING', 'the job ended');
    const ended = job(id);
    expect(ended.state).toBe('SUCCEEDED');
    expect(ended.nodes.map((n) => [n.node, n.rank, n.state, n.exitCode])).toEqual([
      ['sky-j', 0, 'SUCCEEDED', 0],
      ['sky-j-worker1', 1, 'SUCCEEDED', 0],
      ['sky-j-worker2', 2, 'SUCCEEDED', 0],
    ]);
    const logs = skysync(['logs', 'sky-j', String(id)]);
    expect(logs.code, logs.stderr).toBe(0);
    for (let rank = 0; rank < 3; rank++) {
      const prefix = `(${rank ? `sky-j-worker${rank}` : 'sky-j'}, rank=${rank}) `;
      const mine = logs.stdout
        .split('\n')
        .filter((l) => l.startsWith(prefix))
        .map((l) => l.slice(prefix.length));
      expect(mine).toEqual(Array.from({ length: 25 }, (_, i) => `r${rank} line ${i + 1}`));
    }
    // The latest job is the default, and one node's log is not prefixed.
    const head = skysync(['logs', 'sky-j', '--head-only']);
    expect(head.stdout.split('\n')[0]).toBe('r0 line 1');
  });

  it("jobs shows states and exit codes per node; logs -f ends with the job's exit code", () => {
    const started = skysync(['exec', 'sky-j', '-d', '--', 'echo "ran $SKYPILOT_NODE_RANK"; sleep 1; [ $SKYPILOT_NODE_RANK -eq 0 ] || exit $((SKYPILOT_NODE_RANK + 40))']);
    expect(started.code, started.stderr).toBe(0);
    const id = submittedId(started.stderr);
    const follow = skysync(['logs', 'sky-j', String(id), '-f']);
    expect(follow.code, follow.stderr).toBe(41);
    for (let rank = 0; rank < 3; rank++) expect(follow.stdout).toContain(`rank=${rank}) ran ${rank}`);
    const j = job(id);
    expect([j.state, j.exitCode]).toEqual(['FAILED', 41]);
    expect(j.nodes.map((n) => [n.state, n.exitCode])).toEqual([
      ['SUCCEEDED', 0],
      ['FAILED', 41],
      ['FAILED', 42],
    ]);
    const table = skysync(['jobs', 'sky-j']);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(new RegExp(`^${id}\\s+FAILED\\s+41\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\s+echo "ran`, 'm'));
    expect(table.stdout).toContain('sky-j-worker2 (rank 2): FAILED, exit 42');
    expect(table.stdout).toContain('sky-j (rank 0): SUCCEEDED, exit 0');
  });

  it('cancel stops the whole process group on every node and leaves nothing running', async () => {
    const started = skysync(['exec', 'sky-j', '-d', '--', 'sleep 301 & sleep 302 & echo up; wait']);
    expect(started.code, started.stderr).toBe(0);
    const id = submittedId(started.stderr);
    const sleeping = () => cluster.nodes.map((n) => pids(['-u', n.user, '-r', 'R,S,D,T', '-f', 'sleep 30[12]']).length);
    await waitFor(() => sleeping().every((c) => c === 2), 'both sleeps on every node');
    const groups = cluster.nodes.map((n) => Number(fs.readFileSync(path.join(n.home, '.skysync/jobs', String(id), 'pgid'), 'utf8')));
    for (const g of groups) expect(liveInGroup(g).length).toBeGreaterThanOrEqual(3);

    const r = skysync(['cancel', 'sky-j', String(id)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.match(/: job \d+ cancelled/g)).toHaveLength(3);
    for (const g of groups) expect(liveInGroup(g), `group ${g}`).toEqual([]);
    expect(sleeping()).toEqual([0, 0, 0]);
    const j = job(id);
    expect(j.nodes.map((n) => n.state)).toEqual(['CANCELLED', 'CANCELLED', 'CANCELLED']);
    expect(j.state).toBe('CANCELLED');
    // Its log is still there, and following a job that ended returns at once with its code.
    const logs = skysync(['logs', 'sky-j', String(id), '-f']);
    expect(logs.code).toBe(143);
    expect(logs.stdout).toContain('(sky-j-worker1, rank=1) up');
    // Cancelling again changes nothing; an unknown job is an error.
    expect(skysync(['cancel', 'sky-j', String(id)]).stderr).toContain('had already ended (CANCELLED)');
    expect(skysync(['cancel', 'sky-j', '999']).code).toBe(1);
  });

  it('launch -d runs setup then run under the supervisor, with the envs and no secret left in a file', () => {
    fs.writeFileSync(
      path.join(work, 'task.yaml'),
      [
        // Every node of the cluster (a task's num_nodes defaults to 1, as in SkyPilot).
        'num_nodes: 3',
        'envs:',
        '  MODEL: tiny',
        'secrets:',
        '  TOKEN: s3cr3t-value',
        'setup: echo "setup $MODEL"',
        'run: |',
        '  echo "run $SKYPILOT_NODE_RANK $MODEL ${#TOKEN}"',
        '  umask',
        '',
      ].join('\n'),
    );
    const started = skysync(['launch', 'sky-j', 'task.yaml', '-d']);
    expect(started.code, started.stderr).toBe(0);
    const id = submittedId(started.stderr);
    const follow = skysync(['logs', 'sky-j', String(id), '-f']);
    expect(follow.code, follow.stderr).toBe(0);
    expect(follow.stdout).toContain('(sky-j-worker2, rank=2) setup tiny');
    expect(follow.stdout).toContain('(sky-j-worker2, rank=2) run 2 tiny 12');
    expect(follow.stdout).not.toContain('s3cr3t');
    for (const n of cluster.nodes) {
      const dir = path.join(n.home, '.skysync/jobs', String(id));
      expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
      expect(fs.existsSync(path.join(dir, 'job.sh'))).toBe(false);
      for (const f of fs.readdirSync(dir)) expect(fs.readFileSync(path.join(dir, f), 'utf8'), f).not.toContain('s3cr3t');
    }
  });
});
