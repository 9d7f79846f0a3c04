// The CLI as a user runs it: the built bin, real processes, exit codes and output.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = path.resolve('packages/cli/dist/bin.js');
let work: string;

function skysync(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    cwd: opts.cwd,
    env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state'), ...opts.env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function tree(dir: string, files: Record<string, string>): void {
  for (const [p, c] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    fs.writeFileSync(path.join(dir, p), c);
  }
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-cli-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('skysync push', () => {
  it('pushes, reports JSON, and a second push moves nothing', () => {
    const src = path.join(work, 'p1');
    tree(src, { 'a.py': 'print(1)\n', 'lib/b.py': 'x = 2\n', '.gitignore': '*.log\n', 'debug.log': 'noise\n' });
    const home = path.join(work, 'h1');
    const first = skysync(['push', `local:${home}`, '--workdir', src, '--json']);
    expect(first.code, first.stderr).toBe(0);
    const s = JSON.parse(first.stdout);
    for (const k of ['filesScanned', 'filesChanged', 'filesDeleted', 'bytesLiteral', 'bytesWire', 'chunksReused', 'durationMs', 'transport']) {
      expect(s).toHaveProperty(k);
    }
    expect(s.transport).toBe('local');
    expect(s.filesChanged).toBe(3);
    expect(fs.existsSync(path.join(home, 'sky_workdir', 'debug.log'))).toBe(false);
    expect(fs.readFileSync(path.join(home, 'sky_workdir', 'lib/b.py'), 'utf8')).toBe('x = 2\n');
    const again = JSON.parse(skysync(['push', `local:${home}`, '-w', src, '--json']).stdout);
    expect(again.filesChanged).toBe(0);
    expect(again.bytesLiteral).toBe(0);
    expect(again.bytesWire).toBeLessThan(1024);
  });

  it('keeps a warm local agent: the next push reuses it, its watch still finds what a job changed, disconnect ends it', async () => {
    const src = path.join(work, 'p-warm');
    tree(src, { 'a.py': 'print(1)\n', 'lib/b.py': 'x = 2\n' });
    const home = path.join(work, 'h-warm');
    const dest = path.join(home, 'sky_workdir');
    const warm = { env: { SKYSYNC_CONTROL_PERSIST: '30' } };
    const agents = (): string[] =>
      spawnSync('pgrep', ['-f', `agent.cjs serve --home ${home}$`], { encoding: 'utf8' })
        .stdout.split('\n')
        .filter(Boolean);
    expect(skysync(['push', `local:${home}`, '-w', src, '--json'], warm).code).toBe(0);
    // Left behind: one agent for this home, kept by a background process, with a socket only this user can open.
    for (let i = 0; i < 50 && agents().length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    const first = agents();
    expect(first).toHaveLength(1);
    const ctl = path.join(work, 'state', 'ctl');
    expect(fs.statSync(ctl).mode & 0o777).toBe(0o700);

    const again = skysync(['push', `local:${home}`, '-w', src, '--json'], warm);
    expect(JSON.parse(again.stdout).filesChanged).toBe(0);
    // The same agent served it: it was kept, not replaced.
    expect(agents()).toEqual(first);

    // A job edits a placed file: the kept agent's watch sees it, and the push restores the file, twice.
    for (const round of [1, 2]) {
      fs.writeFileSync(path.join(dest, 'lib/b.py'), `changed by a job ${round}\n`);
      const r = skysync(['push', `local:${home}`, '-w', src, '--json'], warm);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).drift).toEqual(['lib/b.py']);
      expect(fs.readFileSync(path.join(dest, 'lib/b.py'), 'utf8')).toBe('x = 2\n');
    }
    expect(agents()).toEqual(first);

    const bye = skysync(['disconnect', `local:${home}`], warm);
    expect(bye.stdout + bye.stderr).toMatch(/disconnected/);
    for (let i = 0; i < 50 && agents().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(agents()).toEqual([]);
    // Turned off (as the tests run by default): nothing stays.
    expect(skysync(['push', `local:${home}`, '-w', src, '--json']).code).toBe(0);
    await new Promise((r) => setTimeout(r, 300));
    expect(agents()).toEqual([]);
  });

  it('updates a touched or chmod-ed file in place, and rewrites one a job changed on the remote', () => {
    const src = path.join(work, 'p-touch');
    tree(src, { 'a.txt': 'alpha\n', 'b.sh': 'echo b\n', 'c.txt': 'gamma\n' });
    const home = path.join(work, 'h-touch');
    const dest = path.join(home, 'sky_workdir');
    expect(skysync(['push', `local:${home}`, '-w', src, '--json']).code).toBe(0);
    const inoBefore = (f: string) => fs.statSync(path.join(dest, f)).ino;
    const [a0, b0, c0] = ['a.txt', 'b.sh', 'c.txt'].map(inoBefore);
    fs.utimesSync(path.join(src, 'a.txt'), 1_700_000_000, 1_700_000_000);
    fs.chmodSync(path.join(src, 'b.sh'), 0o755);
    // A job rewrote c.txt with the same bytes: it is no longer the file skysync placed, so it is rebuilt.
    fs.rmSync(path.join(dest, 'c.txt'));
    fs.writeFileSync(path.join(dest, 'c.txt'), 'gamma\n');
    fs.utimesSync(path.join(src, 'c.txt'), 1_700_000_100, 1_700_000_100);
    const r = skysync(['push', `local:${home}`, '-w', src, '--json']);
    expect(r.code, r.stderr).toBe(0);
    // Only the file the job changed travels again (local wins, and a changed file is never a source).
    expect(JSON.parse(r.stdout).bytesLiteral).toBe('gamma\n'.length);
    expect(inoBefore('a.txt')).toBe(a0);
    expect(inoBefore('b.sh')).toBe(b0);
    expect(inoBefore('c.txt')).not.toBe(c0);
    expect(fs.statSync(path.join(dest, 'a.txt')).mtimeMs).toBe(1_700_000_000_000);
    expect(fs.statSync(path.join(dest, 'b.sh')).mode & 0o777).toBe(0o755);
    expect(fs.statSync(path.join(dest, 'c.txt')).mtimeMs).toBe(1_700_000_100_000);
    expect(fs.readFileSync(path.join(dest, 'c.txt'), 'utf8')).toBe('gamma\n');
    // The records follow: a no-op now, and no drift reported.
    const again = JSON.parse(skysync(['push', `local:${home}`, '-w', src, '--json']).stdout);
    expect(again.filesChanged).toBe(0);
    expect(again.drift).toEqual([]);
  });

  it('prints an rsync-like summary when not asked for JSON', () => {
    const src = path.join(work, 'p2');
    tree(src, { 'x.txt': 'x\n' });
    const r = skysync(['push', `local:${path.join(work, 'h2')}`, '-w', src]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/Number of files: 1/);
    expect(r.stderr).toMatch(/Bytes on the wire/);
  });

  it('deletes what it placed by default, keeps with --no-delete, mirrors with --delete', () => {
    const src = path.join(work, 'p3');
    const home = path.join(work, 'h3');
    const dest = path.join(home, 'sky_workdir');
    tree(src, { 'keep.txt': 'k\n', 'gone.txt': 'g\n', 'old.txt': 'o\n', '.gitignore': 'cache/\n' });
    expect(skysync(['push', `local:${home}`, '-w', src]).code).toBe(0);
    tree(dest, { 'job-output.txt': 'from a job\n', 'cache/blob': 'ignored on the remote too\n' });
    fs.rmSync(path.join(src, 'gone.txt'));
    expect(skysync(['push', `local:${home}`, '-w', src]).code).toBe(0);
    expect(fs.existsSync(path.join(dest, 'gone.txt'))).toBe(false);
    expect(fs.existsSync(path.join(dest, 'job-output.txt'))).toBe(true);
    fs.rmSync(path.join(src, 'old.txt'));
    expect(skysync(['push', `local:${home}`, '-w', src, '--no-delete']).code).toBe(0);
    expect(fs.existsSync(path.join(dest, 'old.txt'))).toBe(true);
    const mirror = skysync(['push', `local:${home}`, '-w', src, '--delete', '--json']);
    expect(mirror.code, mirror.stderr).toBe(0);
    expect(fs.existsSync(path.join(dest, 'job-output.txt'))).toBe(false);
    expect(fs.existsSync(path.join(dest, 'old.txt'))).toBe(false);
    expect(fs.existsSync(path.join(dest, 'cache/blob'))).toBe(true);
    expect(fs.existsSync(path.join(dest, 'keep.txt'))).toBe(true);
  });

  it('--dry-run lists what would change and changes nothing', () => {
    const src = path.join(work, 'p4');
    const home = path.join(work, 'h4');
    tree(src, { 'a.txt': 'a\n', 'd/b.txt': 'b\n' });
    const r = skysync(['push', `local:${home}`, '-w', src, '--dry-run']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/added\s+a\.txt/);
    expect(r.stdout).toMatch(/added\s+d\/b\.txt/);
    expect(fs.existsSync(path.join(home, 'sky_workdir', 'a.txt'))).toBe(false);
  });

  it('gives one clear line and a distinct exit code for bad input', () => {
    const missing = skysync(['push', `local:${path.join(work, 'h5')}`, '-w', path.join(work, 'nope')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).toMatch(/no such directory/);
    const badTarget = skysync(['push', 'two words', '-w', work]);
    expect(badTarget.code).toBe(2);
    expect(badTarget.stderr).toMatch(/two words/);
    const emptyLocal = skysync(['push', 'local:', '-w', work]);
    expect(emptyLocal.code).toBe(2);
    expect(emptyLocal.stderr).toMatch(/give a directory after local:/);
    const unreachable = skysync(['push', 'nobody@127.0.0.1:1', '-w', work]);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr.trim().split('\n')).toHaveLength(1);
    expect(unreachable.stderr).toMatch(/127\.0\.0\.1/);
    const badFlag = skysync(['push', '--frobnicate']);
    expect(badFlag.code).toBe(2);
    const badRemote = skysync(['pull', 'nocolon', path.join(work, 'x')]);
    expect(badRemote.code).toBe(2);
    expect(badRemote.stderr).toMatch(/TARGET:PATH/);
  });

  it('exits 3 (partial) when some files cannot be read, and syncs the rest', () => {
    const src = path.join(work, 'p6');
    tree(src, { 'ok.txt': 'ok\n', 'secret.txt': 'no\n' });
    fs.chmodSync(path.join(src, 'secret.txt'), 0o000);
    const home = path.join(work, 'h6');
    fs.mkdirSync(home, { recursive: true });
    fs.mkdirSync(path.join(work, 'state6'), { recursive: true });
    for (const d of [work, src, home, path.join(work, 'state6')]) fs.chmodSync(d, 0o777);
    const asNobody = process.getuid?.() === 0;
    const r = asNobody
      ? spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, BIN, 'push', `local:${home}`, '-w', src], {
          encoding: 'utf8',
          env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state6'), HOME: home },
        })
      : spawnSync(process.execPath, [BIN, 'push', `local:${home}`, '-w', src], { encoding: 'utf8', env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state6') } });
    expect(r.status, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/secret\.txt/);
    expect(fs.readFileSync(path.join(home, 'sky_workdir', 'ok.txt'), 'utf8')).toBe('ok\n');
  });
});

describe('skysync pull', () => {
  it('rebuilds files whose chunks repeat inside them and across files (fresh node, data mode, need mode)', () => {
    const src = path.join(work, 'repeats');
    const home = path.join(work, 'h-repeats');
    // A random 200 KiB block repeated: the chunker cuts the same chunks again and again within one file.
    let seed = 12345;
    const block = Buffer.alloc(200 * 1024);
    for (let i = 0; i < block.length; i++) block[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
    const repeated = Buffer.concat(Array.from({ length: 60 }, () => block));
    tree(src, { 'a/repeated.bin': '', 'b/copy.bin': '', 'c/small.bin': '' });
    fs.writeFileSync(path.join(src, 'a/repeated.bin'), repeated);
    fs.writeFileSync(path.join(src, 'b/copy.bin'), Buffer.concat([Buffer.from('head'), repeated]));
    fs.writeFileSync(path.join(src, 'c/small.bin'), block);
    const first = skysync(['push', `local:${home}`, '--workdir', src, '--json']);
    expect(first.code, first.stderr).toBe(0);
    // Second push in data mode: a new file made of chunks the first push placed and a fresh repeated block.
    const block2 = Buffer.from(block).reverse();
    fs.writeFileSync(path.join(src, 'd.bin'), Buffer.concat([block2, repeated.subarray(0, 3 << 20), block2, block2]));
    const second = skysync(['push', `local:${home}`, '--workdir', src, '--json']);
    expect(second.code, second.stderr).toBe(0);
    for (const f of ['a/repeated.bin', 'b/copy.bin', 'c/small.bin', 'd.bin']) {
      expect(fs.readFileSync(path.join(home, 'sky_workdir', f)).equals(fs.readFileSync(path.join(src, f))), f).toBe(true);
    }
    // Every repeat was sent once: far less literal data than the files hold.
    expect(JSON.parse(first.stdout).bytesLiteral).toBeLessThan(1 << 20);
    // The client forgets what it pushed: the agent is asked what it lacks (need mode) and finds it all.
    fs.rmSync(path.join(work, 'state'), { recursive: true, force: true });
    fs.writeFileSync(path.join(src, 'e.bin'), Buffer.concat([block2, block, Buffer.from('tail')]));
    const third = skysync(['push', `local:${home}`, '--workdir', src, '--json']);
    expect(third.code, third.stderr).toBe(0);
    expect(JSON.parse(third.stdout).bytesLiteral).toBeLessThan(64 * 1024);
    for (const f of ['a/repeated.bin', 'd.bin', 'e.bin']) {
      expect(fs.readFileSync(path.join(home, 'sky_workdir', f)).equals(fs.readFileSync(path.join(src, f))), f).toBe(true);
    }
  });

  it('brings back a directory and a single file', () => {
    const home = path.join(work, 'h7');
    tree(path.join(home, 'sky_workdir', 'outputs'), { 'metrics.json': '{"loss": 0.1}\n', 'ckpt/last.bin': 'weights' });
    const local = path.join(work, 'pulled');
    const r = skysync(['pull', `local:${home}:sky_workdir/outputs`, local, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(local, 'ckpt/last.bin'), 'utf8')).toBe('weights');
    const one = skysync(['pull', `local:${home}:~/sky_workdir/outputs/metrics.json`, path.join(work, 'm.json')]);
    expect(one.code, one.stderr).toBe(0);
    expect(fs.readFileSync(path.join(work, 'm.json'), 'utf8')).toBe('{"loss": 0.1}\n');
    const missing = skysync(['pull', `local:${home}:nothing/here`, path.join(work, 'n')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no such file or directory/);
  });
});
