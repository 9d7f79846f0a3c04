// What a person sees: progress on an 80-column terminal, the closing summary, messages, and pull's reports.

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderScreen } from '../packages/cli/test/screen.js';
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

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** Runs skysync on a pseudo-terminal of 80 columns (util-linux `script`); what the terminal received. */
function inTerminal(args: string[]): { code: number | null; raw: string } {
  const cmd = `stty cols 80 rows 24; ${quote(process.execPath)} ${quote(BIN)} ${args.map(quote).join(' ')}`;
  const r = spawnSync('script', ['-qfec', cmd, '/dev/null'], { encoding: 'utf8', env: env({ TERM: 'xterm' }) });
  return { code: r.status, raw: r.stdout };
}

function tree(dir: string, files: Record<string, string | Buffer>): void {
  for (const [p, c] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    fs.writeFileSync(path.join(dir, p), c);
  }
}

/** Progress rows in what a terminal received: "N MiB / M MiB  P%". */
const PROGRESS_ROW = /\d+(\.\d+)? [KMG]iB \/ \d+(\.\d+)? [KMG]iB +\d+%/;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-ux-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('progress on an 80-column terminal', () => {
  it('a push of tens of MiB shows byte progress in place, no row wider than the terminal, and none left at the end', () => {
    const src = path.join(work, 'big');
    tree(src, { 'model.bin': crypto.randomBytes(48 << 20), 'a.py': 'print(1)\n' });
    const home = path.join(work, 'h-big');
    const r = inTerminal(['push', `local:${home}`, '-w', src]);
    expect(r.code, r.raw).toBe(0);
    expect(r.raw).toMatch(PROGRESS_ROW);
    const screen = renderScreen(r.raw, 80);
    expect(screen.widest, r.raw).toBeLessThanOrEqual(80);
    expect(
      screen.lines.filter((l) => PROGRESS_ROW.test(l)),
      screen.lines.join('\n'),
    ).toEqual([]);
    expect(screen.lines.join('\n')).toMatch(/Number of files: 2/);
    fs.writeFileSync(path.join(work, 'push-screen.txt'), r.raw);

    // The pull of it back shows its own progress the same way.
    const back = path.join(work, 'back');
    const p = inTerminal(['pull', `local:${home}:sky_workdir/model.bin`, back]);
    expect(p.code, p.raw).toBe(0);
    expect(p.raw).toMatch(PROGRESS_ROW);
    const after = renderScreen(p.raw, 80);
    expect(after.widest).toBeLessThanOrEqual(80);
    expect(after.lines.filter((l) => PROGRESS_ROW.test(l))).toEqual([]);
    expect(fs.statSync(back).size).toBe(48 << 20);
  });

  it('-q shows no progress, and a pipe gets no terminal codes', () => {
    const src = path.join(work, 'q');
    tree(src, { 'data.bin': crypto.randomBytes(8 << 20) });
    const q = inTerminal(['push', `local:${path.join(work, 'h-q')}`, '-w', src, '-q']);
    expect(q.code).toBe(0);
    expect(q.raw).not.toMatch(PROGRESS_ROW);
    expect(q.raw.trim()).toBe('');
    const piped = skysync(['push', `local:${path.join(work, 'h-pipe')}`, '-w', src]);
    expect(piped.code).toBe(0);
    expect(piped.stderr).not.toMatch(/\x1b\[|\r/);
  });
});

describe('closing summary', () => {
  it('a dry run says so, a first push has no speedup, and a task note is said once', () => {
    const src = path.join(work, 'sum');
    tree(src, { 'a.py': 'print(1)\n', 'task.yaml': 'workdir: .\nresources:\n  accelerators: A100:1\nrun: echo hi\n' });
    const home = path.join(work, 'h-sum');
    const dry = skysync(['push', `local:${home}`, path.join(src, 'task.yaml'), '-n'], { cwd: src });
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stderr).toMatch(/dry run/i);
    expect(dry.stderr).toMatch(/note: task\.yaml: resources is for SkyPilot's provisioning/);
    const first = skysync(['push', `local:${home}`, path.join(src, 'task.yaml')], { cwd: src });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).not.toMatch(/speedup|note: task\.yaml/i);
    expect(first.stderr).toMatch(/Number of files transferred: 2/);
  });
});

describe('messages', () => {
  it('a target that is no Host of the SSH config and no resolvable name: did you mean, exit 2', () => {
    const cfg = path.join(work, 'ssh_config');
    fs.writeFileSync(cfg, 'Host c1\n  HostName 127.0.0.1\nHost other\n  HostName 127.0.0.1\n');
    const src = path.join(work, 'msg');
    tree(src, { 'a.py': 'x\n' });
    const r = skysync(['-F', cfg, 'push', 'c11', '-w', src]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`no host c11 in ${cfg}`);
    expect(r.stderr).toContain('did you mean c1?');
    expect(r.stderr).not.toMatch(/key/i);
    const p = skysync(['-F', cfg, 'pull', 'c11:x', path.join(work, 'nowhere')]);
    expect(p.code).toBe(2);
    expect(p.stderr).toContain('did you mean c1?');
  });

  it('files the remote changed and the push overwrote are named, the first few then a count', () => {
    const src = path.join(work, 'drift');
    const files = Object.fromEntries(['a', 'b', 'c', 'd', 'e'].map((n) => [`${n}.txt`, `${n}\n`]));
    tree(src, files);
    const home = path.join(work, 'h-drift');
    expect(skysync(['push', `local:${home}`, '-w', src]).code).toBe(0);
    for (const n of Object.keys(files)) fs.writeFileSync(path.join(home, 'sky_workdir', n), 'changed there\n');
    const r = skysync(['push', `local:${home}`, '-w', src]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/5 files changed on the remote were overwritten with your local version: a\.txt, b\.txt, c\.txt and 2 more/);
  });

  it('--dest expanded by the local shell to the local home goes to the remote home, with a note', () => {
    const src = path.join(work, 'dest');
    tree(src, { 'a.py': 'x\n' });
    const home = path.join(work, 'h-dest');
    const r = skysync(['push', `local:${home}`, '-w', src, '--dest', path.join(os.homedir(), 'proj-x')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('taking it as ~/proj-x on the remote');
    expect(fs.readFileSync(path.join(home, 'proj-x', 'a.py'), 'utf8')).toBe('x\n');
  });
});

describe('pull', () => {
  it('lists the files it could not read on the remote and exits 3, bringing the rest', () => {
    const home = path.join(work, 'h-unread');
    const out = path.join(home, 'sky_workdir', 'outputs');
    tree(out, { 'ok.txt': 'ok\n', 'secret.txt': 'no\n' });
    fs.chmodSync(path.join(out, 'secret.txt'), 0o000);
    const state = path.join(work, 'state-unread');
    const local = path.join(work, 'unread-back');
    fs.mkdirSync(state, { recursive: true });
    for (const d of [work, home, path.join(home, 'sky_workdir'), out, state]) fs.chmodSync(d, 0o777);
    const args = [BIN, 'pull', `local:${home}:sky_workdir/outputs`, local];
    // Root reads any file: the pull runs as nobody then.
    const r =
      process.getuid?.() === 0
        ? spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, ...args], {
            encoding: 'utf8',
            env: { ...process.env, SKYSYNC_STATE_DIR: state, HOME: home },
          })
        : spawnSync(process.execPath, args, { encoding: 'utf8', env: env() });
    expect(r.status, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/failed: secret\.txt: permission denied/);
    expect(r.stderr).toMatch(/Number of files failed: 1/);
    expect(r.stderr.match(/secret\.txt/g)).toHaveLength(1);
    expect(fs.readFileSync(path.join(local, 'ok.txt'), 'utf8')).toBe('ok\n');
  });

  it('a missing parent of LOCAL_PATH is an error unless --mkdir', () => {
    const home = path.join(work, 'h-mkdir');
    tree(path.join(home, 'sky_workdir'), { 'm.json': '{}\n' });
    const deep = path.join(work, 'no', 'such', 'dir', 'm.json');
    const r = skysync(['pull', `local:${home}:sky_workdir/m.json`, deep]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`the directory ${path.dirname(deep)} does not exist; create it, or add --mkdir`);
    expect(fs.existsSync(path.join(work, 'no'))).toBe(false);
    const ok = skysync(['pull', `local:${home}:sky_workdir/m.json`, deep, '--mkdir']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(fs.readFileSync(deep, 'utf8')).toBe('{}\n');
  });
});

const sshSkip = sshSkipReason();
describe.skipIf(!!sshSkip)('pull --all-nodes', () => {
  let cluster: SshCluster;
  beforeAll(async () => {
    cluster = await startNodes(3, { cluster: 'sky-ux', strictHostKeyChecking: 'no' });
  }, 180_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('fetches PATH from every node into LOCAL/<node>/', () => {
    cluster.nodes.forEach((n, i) => {
      tree(path.join(n.home, 'logs'), { 'rank.txt': `rank ${i}\n`, [`only-${i}.txt`]: 'x\n' });
      spawnSync('chown', ['-R', `${n.user}:`, path.join(n.home, 'logs')]);
    });
    const local = path.join(work, 'all-logs');
    const r = skysync(['-F', cluster.sshConfig, 'pull', 'sky-ux:~/logs', local, '--all-nodes'], { env: { SSH_AUTH_SOCK: '' } });
    expect(r.code, r.stderr).toBe(0);
    for (const [i, n] of cluster.nodes.entries()) {
      expect(fs.readFileSync(path.join(local, n.name, 'rank.txt'), 'utf8')).toBe(`rank ${i}\n`);
      expect(fs.existsSync(path.join(local, n.name, `only-${i}.txt`))).toBe(true);
      expect(r.stderr).toContain(`${n.name}: 2 files changed`);
    }
    const one = skysync(['-F', cluster.sshConfig, 'pull', 'sky-ux:~/logs/rank.txt', path.join(work, 'ranks'), '--all-nodes', '--json'], { env: { SSH_AUTH_SOCK: '' } });
    expect(one.code, one.stderr).toBe(0);
    expect(JSON.parse(one.stdout).nodes).toHaveLength(3);
    expect(fs.readFileSync(path.join(work, 'ranks', 'sky-ux-worker2', 'rank.txt'), 'utf8')).toBe('rank 2\n');
  });
});
