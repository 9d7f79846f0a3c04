// What SkyPilot users type, through real OpenSSH servers: a three-node cluster (head and two workers, each its
// own Unix user, port and host key) behind an SSH config shaped like SkyPilot's generated one. launch with setup
// and run, exec twice, envs, SKYPILOT_* variables, exit codes, file_mounts, Ctrl-C, pull from a worker.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sshSkipReason, startNodes, type SshCluster, writeSkyPilotConfig } from './helpers/sshd.js';
import { diffItems, walk, type Item } from './helpers/tree.js';

const skip = sshSkipReason();
if (skip) console.log(`SKIP cluster.test.ts: ${skip}`);
const BIN = path.resolve('packages/cli/dist/bin.js');

let work: string;
let cluster: SshCluster;
let cfg: string;
let outside: string;

function skysync(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(process.execPath, [BIN, '-F', cfg, ...args], {
    encoding: 'utf8',
    timeout: 180_000,
    cwd: opts.cwd ?? work,
    env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state'), SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: '0', ...opts.env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function files(dir: string): Map<string, Item> {
  return new Map([...walk(dir)].filter(([, it]) => it.type !== 'dir'));
}

function write(p: string, content: string | Buffer): void {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
}

describe.skipIf(!!skip)('a SkyPilot-shaped cluster', () => {
  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-cluster-'));
    fs.chmodSync(work, 0o755);
    cluster = await startNodes(3, { cluster: 'sky-c', strictHostKeyChecking: 'no' });
    // SkyPilot writes one generated file per cluster and includes it from ~/.ssh/config.
    cfg = writeSkyPilotConfig(work, 'sky-c', cluster, { extra: ['ServerAliveInterval 5'], common: ['ConnectTimeout 20'] });
    // An absolute destination outside ~/ and /tmp/ that the nodes' users may write.
    outside = fs.mkdtempSync('/srv-skysync-e2e-');
    fs.chmodSync(outside, 0o1777);

    const proj = path.join(work, 'proj');
    write(path.join(proj, 'train.py'), 'print("training")\n');
    write(path.join(proj, 'lib/util.py'), 'X = 1\n');
    write(path.join(proj, '.gitignore'), 'data/*\n!data/keep.txt\n*.log\n');
    write(path.join(proj, 'data/big.bin'), Buffer.alloc(1 << 20, 7));
    write(path.join(proj, 'data/keep.txt'), 'kept\n');
    write(path.join(proj, 'run.log'), 'noise\n');
    write(path.join(work, 'assets/vocab.txt'), 'a b c\n');
    write(path.join(work, 'assets/nested/deep.txt'), 'deep\n');
    write(path.join(work, 'assets/.gitignore'), '*.tmp\n');
    write(path.join(work, 'assets/scratch.tmp'), 'ignored\n');
    write(path.join(work, 'config.json'), '{"lr": 0.1}\n');
    // Absolute destinations are per machine: here all nodes share one, so only the head gets them.
    write(
      path.join(work, 'abs.yaml'),
      ['file_mounts:', `  ${outside}/ckpt: ./assets`, `  /tmp/${path.basename(work)}-cfg.json: ./config.json`, 'run: ls ' + outside + '/ckpt', ''].join('\n'),
    );
    write(
      path.join(work, 'task.yaml'),
      [
        'name: e2e',
        'workdir: ./proj',
        'num_nodes: 3',
        'resources:',
        '  accelerators: A100:8',
        'envs:',
        '  MODEL: small',
        '  EPOCHS: 2',
        'file_mounts:',
        '  assets: ./assets',
        '  ~/cfg/config.json: ./config.json',
        '  ~/${MODEL}-assets: ./assets',
        'setup: |',
        '  echo "setup on $SKYPILOT_NODE_RANK" > ~/setup-ran',
        'run: |',
        '  echo "rank=$SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES model=$MODEL epochs=$EPOCHS pwd=$(pwd)"',
        '  echo "ips=$(echo "$SKYPILOT_NODE_IPS" | wc -l)"',
        '  python3 --version >/dev/null 2>&1 || true',
        '  test -f train.py && test -f assets/vocab.txt && test ! -e assets/scratch.tmp',
        '  echo to-stderr >&2',
        '  echo "out from $SKYPILOT_NODE_RANK" > ~/sky_workdir/out-$SKYPILOT_NODE_RANK.txt',
        '',
      ].join('\n'),
    );
  }, 180_000);

  afterAll(async () => {
    await cluster?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
    if (outside) fs.rmSync(outside, { recursive: true, force: true });
  });

  it('launch: workdir and file_mounts on every node, setup then run, envs and SKYPILOT_* variables', () => {
    const logins = (): number[] => cluster.logs().map((l) => (l.match(/Accepted publickey/g) ?? []).length);
    const before = logins();
    const r = skysync(['launch', 'sky-c', 'task.yaml', '--env', 'EPOCHS=5']);
    expect(r.code, r.stderr).toBe(0);
    // The workdir, four mounts, setup and run: one SSH connection per node for all of it.
    expect(logins().map((n, i) => n - before[i]!)).toEqual([1, 1, 1]);
    expect(r.stderr).toMatch(/note: task\.yaml: resources is for SkyPilot's provisioning/);
    for (let rank = 0; rank < 3; rank++) {
      const n = cluster.nodes[rank]!;
      const prefix = `(${rank ? `sky-c-worker${rank}` : 'sky-c'}, rank=${rank}) `;
      expect(r.stdout).toContain(`${prefix}rank=${rank} of 3 model=small epochs=5 pwd=${n.home}/sky_workdir`);
      expect(r.stdout).toContain(`${prefix}ips=3`);
      expect(r.stderr).toContain(`${prefix}to-stderr`);
      expect(fs.readFileSync(path.join(n.home, 'setup-ran'), 'utf8')).toBe(`setup on ${rank}\n`);
      // The workdir with git's ignore rules (data/* ignored, !data/keep.txt kept).
      const wd = files(path.join(n.home, 'sky_workdir'));
      expect([...wd.keys()].filter((p) => !p.startsWith('out-') && !p.startsWith('assets/')).sort()).toEqual(['.gitignore', 'data/keep.txt', 'lib/util.py', 'train.py']);
      // Relative, ~/ (with an env in the key), absolute outside ~ and /tmp, and /tmp destinations; files and dirs.
      const assets = files(path.join(work, 'assets'));
      assets.delete('scratch.tmp');
      for (const d of [path.join(n.home, 'sky_workdir/assets'), path.join(n.home, 'small-assets')]) {
        expect(diffItems(assets, files(d), {}), d).toEqual([]);
      }
      expect(fs.readFileSync(path.join(n.home, 'cfg/config.json'), 'utf8')).toBe('{"lr": 0.1}\n');
      expect(fs.readFileSync(path.join(n.home, 'sky_workdir', `out-${rank}.txt`), 'utf8')).toBe(`out from ${rank}\n`);
    }
  });

  it('absolute destinations outside ~/ and /tmp/ are written directly where the user may write', () => {
    const r = skysync(['launch', 'sky-c', 'abs.yaml', '--head-only']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('vocab.txt');
    expect(fs.readFileSync(path.join(outside, 'ckpt/vocab.txt'), 'utf8')).toBe('a b c\n');
    expect(fs.readFileSync(`/tmp/${path.basename(work)}-cfg.json`, 'utf8')).toBe('{"lr": 0.1}\n');
    expect(fs.lstatSync(path.join(outside, 'ckpt')).isDirectory()).toBe(true);
    fs.rmSync(`/tmp/${path.basename(work)}-cfg.json`);
  });

  it('exec twice: the second moves (almost) nothing, skips file_mounts with a note, and keeps the exit code', () => {
    fs.writeFileSync(path.join(work, 'proj/train.py'), 'print("training v2")\n');
    const first = skysync(['exec', 'sky-c', 'task.yaml', '--json']);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/file_mounts are not synced by exec .*--file-mounts/);
    const j1 = JSON.parse(first.stdout.trim().split('\n').pop()!);
    expect(j1.nodes).toHaveLength(3);
    expect(j1.filesChanged).toBe(3); // train.py on each of three nodes
    expect(j1.exitCodes).toEqual([0, 0, 0]);
    for (const n of cluster.nodes) expect(fs.readFileSync(path.join(n.home, 'sky_workdir/train.py'), 'utf8')).toBe('print("training v2")\n');
    const second = skysync(['exec', 'sky-c', 'task.yaml', '--json']);
    expect(second.code, second.stderr).toBe(0);
    const j2 = JSON.parse(second.stdout.trim().split('\n').pop()!);
    expect(j2.filesChanged).toBe(0);
    expect(j2.bytesLiteral).toBe(0);

    // The first non-zero exit code, in node order; every node still ran.
    const failing = skysync(['exec', 'sky-c', '--', 'echo ran-$SKYPILOT_NODE_RANK; [ $SKYPILOT_NODE_RANK -eq 0 ] || exit $((SKYPILOT_NODE_RANK + 40))']);
    expect(failing.code, failing.stderr).toBe(41);
    for (let rank = 0; rank < 3; rank++) expect(failing.stdout).toContain(`rank=${rank}) ran-${rank}`);
    const head = skysync(['exec', 'sky-c', '--head-only', '--', 'exit 7']);
    expect(head.code).toBe(7);
    const picked = skysync(['exec', 'sky-c', '--nodes', 'sky-c-worker2,sky-c', '--', 'echo "$SKYPILOT_NODE_RANK/$SKYPILOT_NUM_NODES $USER"']);
    expect(picked.code, picked.stderr).toBe(0);
    expect(picked.stdout).toContain(`(sky-c-worker2, rank=0) 0/2 ${cluster.nodes[2]!.user}`);
    expect(picked.stdout).toContain(`(sky-c, rank=1) 1/2 ${cluster.nodes[0]!.user}`);
  });

  it('launch --no-setup skips setup but still syncs file_mounts; --dry-run changes and runs nothing', () => {
    for (const n of cluster.nodes) fs.rmSync(path.join(n.home, 'setup-ran'), { force: true });
    fs.writeFileSync(path.join(work, 'assets/vocab.txt'), 'a b c d\n');
    const dry = skysync(['launch', 'sky-c', 'task.yaml', '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/sky-c-worker2: file_mounts\.assets -> ~\/sky_workdir\/assets: modified +vocab\.txt/);
    expect(fs.readFileSync(path.join(cluster.nodes[1]!.home, 'sky_workdir/assets/vocab.txt'), 'utf8')).toBe('a b c\n');
    const r = skysync(['launch', 'sky-c', 'task.yaml', '--no-setup']);
    expect(r.code, r.stderr).toBe(0);
    for (const n of cluster.nodes) {
      expect(fs.existsSync(path.join(n.home, 'setup-ran'))).toBe(false);
      expect(fs.readFileSync(path.join(n.home, 'sky_workdir/assets/vocab.txt'), 'utf8')).toBe('a b c d\n');
    }
  });

  it('Ctrl-C stops the remote job on every node', async () => {
    const child = spawn(process.execPath, [BIN, '-F', cfg, 'exec', 'sky-c', '--', 'echo started; sleep 300; echo not-reached'], {
      cwd: work,
      env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state'), SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: '0' },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const deadline = Date.now() + 60_000;
    while ((out.match(/started/g) ?? []).length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect((out.match(/started/g) ?? []).length, err).toBe(3);
    const sleeping = () => cluster.nodes.filter((n) => spawnSync('pgrep', ['-u', n.user, '-f', 'sleep 300']).status === 0).length;
    expect(sleeping()).toBe(3);
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(130);
    expect(out).not.toContain('not-reached');
    expect(err).toMatch(/interrupting/);
    for (let i = 0; i < 50 && sleeping() > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(sleeping()).toBe(0);
  });

  it('keeps warm connections: reused by the next command, private, ended by disconnect or idleness, replaced when gone', async () => {
    const warm = { env: { SKYSYNC_CONTROL_PERSIST: '30' } };
    const logins = (): number[] => cluster.logs().map((l) => (l.match(/Accepted publickey/g) ?? []).length);
    const ctl = path.join(work, 'state', 'ctl');
    const sockets = (): string[] => (fs.existsSync(ctl) ? fs.readdirSync(ctl).filter((f) => f.endsWith('.sock')) : []);
    const waitFor = async (cond: () => boolean, what: string): Promise<void> => {
      for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 50));
      expect(cond(), what).toBe(true);
    };
    const before = logins();
    const first = skysync(['exec', 'sky-c', '--', 'echo first'], warm);
    expect(first.code, first.stderr).toBe(0);
    // The command connected once per node; afterwards each node's background process connected once more.
    await waitFor(() => sockets().length === 3 && logins().every((n, i) => n - before[i]! === 2), 'three warm connections');
    expect(fs.statSync(ctl).mode & 0o777).toBe(0o700);
    for (const s of sockets()) expect(fs.statSync(path.join(ctl, s)).mode & 0o777).toBe(0o600);

    const mid = logins();
    const second = skysync(['exec', 'sky-c', 'task.yaml'], warm);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toContain('(sky-c-worker2, rank=2) rank=2 of 3 model=small');
    const failing = skysync(['exec', 'sky-c', '--', 'exit 9'], warm);
    expect(failing.code).toBe(9);
    expect(logins(), 'no new logins through warm connections').toEqual(mid);

    // Between commands each node keeps one agent, the one the last push handed back: the next push reuses it.
    const agents = (): string[] => cluster.nodes.map((n) => spawnSync('pgrep', ['-u', n.user, '-f', 'skysync/agent/.*serve'], { encoding: 'utf8' }).stdout.trim());
    await waitFor(() => agents().every((p) => /^\d+$/.test(p)), 'one idle agent per node');
    const idleAgents = agents();
    write(path.join(work, 'proj', 'reuse.txt'), 'reused\n');
    const third = skysync(['exec', 'sky-c', 'task.yaml', '--', 'cat reuse.txt'], warm);
    expect(third.code, third.stderr).toBe(0);
    expect(third.stdout).toContain('(sky-c-worker1, rank=1) reused');
    expect(agents(), 'the same agent processes served the push').toEqual(idleAgents);

    // A kept agent watches its destination and then checks only directories that changed for drift: a file a job
    // changed on the node is still found, and the local version wins.
    const onWorker = path.join(cluster.nodes[1]!.home, 'sky_workdir', 'reuse.txt');
    for (const round of [1, 2]) {
      fs.writeFileSync(onWorker, `changed on the node ${round}\n`);
      const again = skysync(['exec', 'sky-c', 'task.yaml', '--', 'cat reuse.txt'], warm);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toContain('(sky-c-worker1, rank=1) reused');
      expect(fs.readFileSync(onWorker, 'utf8'), `round ${round}`).toBe('reused\n');
    }

    // A background process that died leaves a socket nobody answers: the next command connects afresh.
    const victim = spawnSync('pgrep', ['-f', `control-main.js.*"spec":"sky-c-worker1"`], { encoding: 'utf8' }).stdout.trim().split('\n')[0]!;
    expect(victim).toMatch(/^\d+$/);
    process.kill(Number(victim), 'SIGKILL');
    const afterKill = skysync(['exec', 'sky-c', '--', 'echo again'], warm);
    expect(afterKill.code, afterKill.stderr).toBe(0);
    expect(afterKill.stdout).toContain('(sky-c-worker1, rank=1) again');

    await waitFor(() => sockets().length === 3, 'the replaced warm connection');
    const bye = skysync(['disconnect', 'sky-c'], warm);
    expect(bye.code, bye.stderr).toBe(0);
    expect(bye.stderr.match(/: disconnected/g)).toHaveLength(3);
    await waitFor(() => sockets().length === 0, 'sockets removed after disconnect');
    expect(skysync(['disconnect', 'sky-c'], warm).stderr).toMatch(/sky-c: no warm connection/);

    // Idle timeout.
    const short = { env: { SKYSYNC_CONTROL_PERSIST: '1' } };
    expect(skysync(['exec', 'sky-c', '--head-only', '--', 'true'], short).code).toBe(0);
    await waitFor(() => sockets().length === 1, 'a warm connection to the head');
    await waitFor(() => sockets().length === 0, 'the idle warm connection ended');
  });

  it('pull from a worker by its name', () => {
    const dest = path.join(work, 'pulled.txt');
    const r = skysync(['pull', 'sky-c-worker2:~/sky_workdir/out-2.txt', dest]);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(dest, 'utf8')).toBe('out from 2\n');
  });

  it("destinations the user cannot write: linked from ~/.sky/file_mounts, else SkyPilot's errors in one line", () => {
    write(path.join(work, 'bad.yaml'), 'file_mounts:\n  /opt/skysync-e2e-denied/x: ./config.json\nrun: echo never\n');
    const r = skysync(['launch', 'sky-c', 'bad.yaml', '--head-only']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/error: file_mounts\.\/opt\/skysync-e2e-denied\/x: cannot write \/opt.* (sudo|no sudo).*pick a destination under ~\//);
    expect(r.stdout).not.toContain('never');
    expect(fs.existsSync('/opt/skysync-e2e-denied')).toBe(false);

    // SkyPilot's placement for such paths: under ~/.sky/file_mounts and linked into place. A link made earlier
    // (by sudo) is reused; a real directory in the way gives SkyPilot's "path exists" error.
    const head = cluster.nodes[0]!;
    const linked = path.join(outside, 'linked');
    fs.symlinkSync(path.join(head.home, '.sky/file_mounts', linked.slice(1)), linked);
    const blocked = fs.mkdtempSync('/srv-skysync-e2e-ro-');
    fs.chmodSync(blocked, 0o755);
    try {
      write(path.join(work, 'link.yaml'), `file_mounts:\n  ${linked}: ./assets\nrun: cat ${linked}/vocab.txt\n`);
      const ok = skysync(['launch', 'sky-c', 'link.yaml', '--head-only']);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stdout).toMatch(/^a b c/);
      expect(ok.stderr).toContain(`-> ~/.sky/file_mounts${linked}`);
      expect(fs.lstatSync(linked).isSymbolicLink()).toBe(true);
      write(path.join(work, 'blocked.yaml'), `file_mounts:\n  ${blocked}: ./assets\nrun: echo never\n`);
      const no = skysync(['launch', 'sky-c', 'blocked.yaml', '--head-only']);
      expect(no.code).toBe(1);
      expect(no.stderr).toContain(`Failed mounting because path exists: ${blocked}`);
      expect(no.stdout).not.toContain('never');
      expect(fs.readdirSync(blocked)).toEqual([]);
    } finally {
      fs.rmSync(blocked, { recursive: true, force: true });
    }
  });
});

describe('task YAML errors through the CLI', () => {
  const dir = path.resolve('packages/task/test/fixtures/invalid');
  const cases = fs.readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  it.each(cases)('%s: one line naming the file, exit code 2, nothing contacted', (name) => {
    const r = spawnSync(process.execPath, [BIN, 'launch', 'nobody@127.0.0.1:1', path.join(dir, name)], {
      encoding: 'utf8',
      cwd: dir,
      env: { ...process.env, SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: '0' },
    });
    expect(r.status, r.stderr).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toContain(name);
    expect(lines[0]).not.toMatch(/127\.0\.0\.1/);
  });
  it('a cloud URI mount is parsed, then refused by name as not supported yet', () => {
    const f = path.join(os.tmpdir(), `skysync-uri-${process.pid}.yaml`);
    fs.writeFileSync(f, 'file_mounts:\n  /data: r2://my-bucket/data\nrun: echo hi\n');
    const r = spawnSync(process.execPath, [BIN, 'launch', 'local:/tmp/skysync-never', f], { encoding: 'utf8' });
    fs.rmSync(f);
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toMatch(/file_mounts\.\/data: a cloud URI \(r2:\/\/my-bucket\/data\) is not supported yet/);
    expect(fs.existsSync('/tmp/skysync-never')).toBe(false);
  });
});
