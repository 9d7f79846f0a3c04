// What a person (or a script) sees, continued: exec's JSON apart from the job's output, help with the
// environment and exit codes, a push waiting for another, Ctrl-C, disconnect, remote permission errors.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sshSkipReason, startNodes, type SshCluster } from './helpers/sshd.js';

const BIN = path.resolve('packages/cli/dist/bin.js');
let work: string;

function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state'), ...extra };
}

function skysync(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: opts.cwd, env: env(opts.env) });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function tree(dir: string, files: Record<string, string | Buffer>): void {
  for (const [p, c] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    fs.writeFileSync(path.join(dir, p), c);
  }
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-uxm-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('exec --json', () => {
  it("prints the JSON as stdout's last line, on its own line, after a job output with no final newline", () => {
    const src = path.join(work, 'json-src');
    tree(src, { 'a.py': 'print(1)\n' });
    const r = skysync(['exec', `local:${path.join(work, 'h-json')}`, '-w', src, '--json', '--', 'printf', 'no-newline']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines.at(-1)).toBe('');
    expect(lines.slice(0, -2).join('\n')).toBe('no-newline');
    expect(JSON.parse(lines.at(-2)!)).toMatchObject({ exitCodes: [0], exitCode: 0 });
  });

  it('--json-file leaves stdout to the job', () => {
    const src = path.join(work, 'json-src');
    const file = path.join(work, 'exec.json');
    const r = skysync(['exec', `local:${path.join(work, 'h-json')}`, '-w', src, '--json-file', file, '--', 'echo', 'hello']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('hello\n');
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toMatchObject({ exitCodes: [0], exitCode: 0 });
  });
});

/** Holds the push lock of `home`'s workdir for another push: a live process's pid in the lock file. */
function holdLock(home: string, seconds: number) {
  const stateDir = path.join(home, '.skysync', 'state');
  const saved = fs.readdirSync(stateDir).find((f) => f.endsWith('.gen'))!;
  const holder = spawn('sleep', [String(seconds)], { stdio: 'ignore' });
  fs.writeFileSync(path.join(stateDir, saved.replace(/\.gen$/, '.lock')), String(holder.pid));
  return holder;
}

describe('a push that waits for another', () => {
  it('says once that it waits for the push holding the destination, then goes on', () => {
    const src = path.join(work, 'wait-src');
    tree(src, { 'a.py': 'print(1)\n' });
    const home = path.join(work, 'h-wait');
    expect(skysync(['push', `local:${home}`, '-w', src]).code).toBe(0);
    const holder = holdLock(home, 2.5);
    fs.writeFileSync(path.join(src, 'b.py'), 'print(2)\n');
    const r = skysync(['push', `local:${home}`, '-w', src]);
    expect(r.code, r.stderr).toBe(0);
    const said = r.stderr.split('\n').filter((l) => l.includes('waiting for another push to'));
    expect(said, r.stderr).toHaveLength(1);
    expect(said[0]).toContain(`(pid ${holder.pid})`);
    expect(fs.readFileSync(path.join(home, 'sky_workdir', 'b.py'), 'utf8')).toBe('print(2)\n');
  });
});

describe('Ctrl-C during a sync', () => {
  it('says what was interrupted and that the next push converges; exit 130', async () => {
    const src = path.join(work, 'int-src');
    tree(src, { 'a.py': 'print(1)\n' });
    const home = path.join(work, 'h-int');
    expect(skysync(['push', `local:${home}`, '-w', src]).code).toBe(0);
    // The push waits for a lock held by another: a sync caught in the middle, every time.
    const holder = holdLock(home, 30);
    fs.writeFileSync(path.join(src, 'b.py'), 'print(2)\n');
    const child = spawn(process.execPath, [BIN, 'push', `local:${home}`, '-w', src], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += String(d);
      if (stderr.includes('waiting for another push')) child.kill('SIGINT');
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    holder.kill();
    expect(code, stderr).toBe(130);
    expect(stderr).toMatch(new RegExp(`interrupted the sync of ${src} to local:${home}; .*run the push again: it picks up from there and converges`));
    // As promised: the next push converges.
    const again = skysync(['push', `local:${home}`, '-w', src]);
    expect(again.code, again.stderr).toBe(0);
    expect(fs.readFileSync(path.join(home, 'sky_workdir', 'b.py'), 'utf8')).toBe('print(2)\n');
  });
});

const sshSkip = sshSkipReason();
describe.skipIf(!!sshSkip)('disconnect over SSH', () => {
  let cluster: SshCluster;
  beforeAll(async () => {
    cluster = await startNodes(1, { cluster: 'sky-uxm', strictHostKeyChecking: 'no' });
  }, 180_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('ends every warm connection to the target, also one made before its SSH config changed', async () => {
    const state = path.join(work, 'state-dc');
    const warm = { SKYSYNC_STATE_DIR: state, SKYSYNC_CONTROL_PERSIST: '300', SSH_AUTH_SOCK: '' };
    const ctl = path.join(state, 'ctl');
    const sockets = (): string[] => (fs.existsSync(ctl) ? fs.readdirSync(ctl).filter((f) => f.endsWith('.sock')) : []);
    const src = path.join(work, 'dc-src');
    tree(src, { 'a.py': 'print(1)\n' });
    expect(skysync(['-F', cluster.sshConfig, 'push', 'sky-uxm', '-w', src], { env: warm }).code).toBe(0);
    // The config changes (its stamp is part of the connection's key): the next push leaves a second one.
    fs.appendFileSync(cluster.sshConfig, '\n# edited\n');
    fs.utimesSync(cluster.sshConfig, new Date(), new Date(Date.now() + 5000));
    expect(skysync(['-F', cluster.sshConfig, 'push', 'sky-uxm', '-w', src], { env: warm }).code).toBe(0);
    for (let i = 0; i < 50 && sockets().length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    expect(sockets()).toHaveLength(2);
    const r = skysync(['-F', cluster.sshConfig, 'disconnect', 'sky-uxm'], { env: warm });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('sky-uxm: disconnected');
    for (let i = 0; i < 50 && sockets().length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(sockets()).toEqual([]);
  }, 120_000);

  it('a permission error on the remote names the path and the node once, and says what to do', () => {
    const env = { SKYSYNC_STATE_DIR: path.join(work, 'state-perm'), SSH_AUTH_SOCK: '' };
    const src = path.join(work, 'perm-src');
    tree(src, { 'a.py': 'print(1)\n', 'b.py': 'print(2)\n' });
    const push = (...more: string[]) => skysync(['-F', cluster.sshConfig, 'push', 'sky-uxm', '-w', src, ...more], { env });
    // A destination the SSH user may not create.
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'uxm-root-'));
    fs.chmodSync(parent, 0o755);
    let r = push('--dest', path.join(parent, 'x'));
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(`error: sky-uxm: permission denied on ${path.join(parent, 'x')}; the SSH user may not write there`);
    expect(r.stderr).not.toContain('EACCES');
    // One it may not write into: each file listed, the advice once.
    r = push('--dest', parent);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/failed: a\.py: permission denied\n/);
    expect(r.stderr.match(/could not be written in/g), r.stderr).toHaveLength(1);
    expect(r.stderr).toContain(`note: sky-uxm: 2 files could not be written in ${parent} (permission denied)`);
    // Its own ~/.skysync taken away.
    const home = cluster.nodes[0]!.home;
    fs.renameSync(path.join(home, '.skysync'), path.join(home, '.skysync-aside'));
    fs.mkdirSync(path.join(home, '.skysync'), { mode: 0o555 });
    try {
      r = push();
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain(`sky-uxm: permission denied on ${path.join(home, '.skysync')}`);
      expect(r.stderr).toContain(`skysync keeps its agent and state in ${path.join(home, '.skysync')}`);
    } finally {
      fs.rmSync(path.join(home, '.skysync'), { recursive: true });
      fs.renameSync(path.join(home, '.skysync-aside'), path.join(home, '.skysync'));
    }
  }, 120_000);
});
