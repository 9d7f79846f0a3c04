// Jobs on a cluster as SkyPilot users expect them, through real OpenSSH servers: where the job runs, on how many
// nodes, with which umask, output as it comes, commands without `--`, secrets that never show, the variables
// SkyPilot sets, and standard input reaching the head's job.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sshSkipReason, startNodes, type SshCluster } from './helpers/sshd.js';

const skip = sshSkipReason();
if (skip) console.log(`SKIP cluster-jobs.test.ts: ${skip}`);
const BIN = path.resolve('packages/cli/dist/bin.js');

let work: string;
let cluster: SshCluster;
let cfg: string;

function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state'), SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: '0', ...extra };
}

function skysync(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}) {
  const r = spawnSync(process.execPath, [BIN, '-F', cfg, ...args], { encoding: 'utf8', timeout: 60_000, cwd: work, input: opts.input ?? '', env: env(opts.env) });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function write(p: string, content: string): void {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
}

/** Every file under `dir` whose bytes contain `needle`. */
function filesHolding(dir: string, needle: string): string[] {
  const found: string[] = [];
  const visit = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) visit(p);
      else if (e.isFile() && fs.readFileSync(p).includes(needle)) found.push(p);
    }
  };
  if (fs.existsSync(dir)) visit(dir);
  return found;
}

describe.skipIf(!!skip)('jobs on a SkyPilot-shaped cluster', () => {
  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-cljobs-'));
    fs.chmodSync(work, 0o755);
    cluster = await startNodes(3, { cluster: 'jb', strictHostKeyChecking: 'no' });
    cfg = cluster.sshConfig;
    write(path.join(work, 'proj/marker.txt'), 'fresh\n');
    write(path.join(work, 'two.yaml'), 'num_nodes: 2\nrun: echo "rank=$SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES"\n');
    write(path.join(work, 'five.yaml'), 'num_nodes: 5\nrun: echo never\n');
    write(path.join(work, 'gpus.yaml'), 'num_nodes: 3\nresources:\n  accelerators: A100:8\nrun: echo "gpus=$SKYPILOT_NUM_GPUS_PER_NODE"\n');
    write(path.join(work, 'secret.yaml'), 'num_nodes: 3\nsecrets:\n  TOK: null\nrun: \'[ "$TOK" = s3cr3t-value ] && echo secret-ok\'\n');
  }, 180_000);

  afterAll(async () => {
    await cluster?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('exec --dest DIR runs the job where its workdir was pushed', () => {
    const r = skysync(['exec', 'jb', '-w', 'proj', '--dest', '~/elsewhere', '--', 'pwd; cat marker.txt']);
    expect(r.code, r.stderr).toBe(0);
    cluster.nodes.forEach((n, rank) => {
      expect(r.stdout).toContain(`rank=${rank}) ${n.home}/elsewhere\n`);
    });
    expect(r.stdout.match(/\) fresh$/gm)).toHaveLength(3);
  });

  it('num_nodes: the first N nodes, head first; more than the cluster has is refused before anything runs', () => {
    const two = skysync(['exec', 'jb', 'two.yaml']);
    expect(two.code, two.stderr).toBe(0);
    expect(two.stdout).toContain('(jb, rank=0) rank=0 of 2');
    expect(two.stdout).toContain('(jb-worker1, rank=1) rank=1 of 2');
    expect(two.stdout).not.toContain('jb-worker2');
    const five = skysync(['launch', 'jb', 'five.yaml']);
    expect(five.code).toBe(2);
    expect(five.stderr).toMatch(/five\.yaml: num_nodes is 5, but the cluster has 3 nodes/);
    expect(five.stdout).not.toContain('never');
  });

  it('jobs get the login umask, not 077', () => {
    const r = skysync(['exec', 'jb', '--', 'umask; touch ~/umask-probe']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.match(/\) 0022$/gm)).toHaveLength(3);
    for (const n of cluster.nodes) expect(fs.statSync(path.join(n.home, 'umask-probe')).mode & 0o777).toBe(0o644);
  });

  it("Python's output arrives while the job runs", async () => {
    const child = spawn(process.execPath, [BIN, '-F', cfg, 'exec', 'jb', '--head-only', '--', "python3 -c \"import time; print('first'); time.sleep(4); print('second')\""], {
      cwd: work,
      env: env(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    let ended = false;
    void exited.then(() => (ended = true));
    while (!out.includes('first') && !ended) await new Promise((r) => setTimeout(r, 50));
    expect(ended, 'the first line came only at the end').toBe(false);
    expect(await exited).toBe(0);
    expect(out).toBe('first\nsecond\n');
  });

  it('a command without --: the word after the target that is not a YAML file starts it', () => {
    const r = skysync(['exec', 'jb', '--head-only', 'python3', '-V']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toMatch(/^Python 3\./m);
    const args = skysync(['exec', 'jb', 'echo', 'a', '--json']);
    expect(args.code, args.stderr).toBe(0);
    expect(args.stdout.match(/\) a --json$/gm)).toHaveLength(3);
  });

  it('--secret, --secret-file, --env-file: the job has them; their values are never printed nor left in files', () => {
    const r = skysync(['exec', 'jb', 'secret.yaml', '--secret', 'TOK=s3cr3t-value', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.match(/secret-ok/g)).toHaveLength(3);
    const fromEnv = skysync(['exec', 'jb', 'secret.yaml', '--secret', 'TOK'], { env: { TOK: 's3cr3t-value' } });
    expect(fromEnv.stdout.match(/secret-ok/g), fromEnv.stderr).toHaveLength(3);
    write(path.join(work, 'sec.env'), '# secrets\nTOK="s3cr3t-value"\n');
    write(path.join(work, 'app.env'), 'export LR=1e-4\nMODEL=7b # size\n');
    const files = skysync([
      'exec',
      'jb',
      '--head-only',
      '--secret-file',
      'sec.env',
      '--env-file',
      'app.env',
      '--env',
      'MODEL=13b',
      '--',
      'echo "$LR $MODEL $TOK" | sed s/s3cr3t-value/hidden/',
    ]);
    expect(files.code, files.stderr).toBe(0);
    expect(files.stdout).toBe('1e-4 13b hidden\n');
    for (const x of [r, fromEnv, files]) expect(x.stdout + x.stderr).not.toContain('s3cr3t-value');
    const missing = skysync(['exec', 'jb', 'secret.yaml']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/secrets\.TOK: has no value \(null\); set it in the YAML or pass --secret TOK=VALUE/);
    for (const dir of [path.join(work, 'state'), ...cluster.nodes.map((n) => n.home)]) expect(filesHolding(dir, 's3cr3t-value'), dir).toEqual([]);
  });

  it('SKYPILOT_NUM_GPUS_PER_NODE, SKYPILOT_TASK_ID and SKYPILOT_CLUSTER_INFO as SkyPilot shapes them', () => {
    const gpus = skysync(['exec', 'jb', 'gpus.yaml']);
    expect(gpus.stdout.match(/\) gpus=8$/gm), gpus.stderr).toHaveLength(3);
    const r = skysync(['exec', 'jb', '--', 'echo "id=$SKYPILOT_TASK_ID"; echo "info=$SKYPILOT_CLUSTER_INFO"; echo "gpus=$SKYPILOT_NUM_GPUS_PER_NODE"']);
    expect(r.code, r.stderr).toBe(0);
    const ids = [...r.stdout.matchAll(/id=(.*)$/gm)].map((m) => m[1]);
    expect(ids).toHaveLength(3);
    expect(new Set(ids).size, 'one task id for every node').toBe(1);
    expect(ids[0]).toMatch(/^sky-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{6}_jb_\d+$/);
    const info = JSON.parse(/info=(.*)$/m.exec(r.stdout)![1]!);
    expect(info.cluster_name).toBe('jb');
    expect(Object.keys(info)).toEqual(['cluster_name', 'cloud', 'region', 'zone']);
    expect(r.stdout.match(/\) gpus=0$/gm)).toHaveLength(3);
  });

  it("standard input reaches the head's job", () => {
    const r = skysync(['exec', 'jb', '--', 'cat; echo "done-$SKYPILOT_NODE_RANK"'], { input: 'hi\nthere\n' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('(jb, rank=0) hi\n(jb, rank=0) there\n');
    expect(r.stdout.match(/hi/g)).toHaveLength(1);
    expect(r.stdout.match(/done-\d/g)).toHaveLength(3);
    const one = skysync(['exec', 'jb', '--head-only', '--', 'cat'], { input: 'hi\n' });
    expect(one.stdout).toBe('hi\n');
  });
});
