// Two sources pushed to one destination (issue 22, defect 4): `--delete` leaves the destination equal to the
// source that pushed last, ignored paths excepted, whoever placed the rest; without it, a push never removes
// what another source or a job placed.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = path.resolve('packages/cli/dist/bin.js');
let work: string;

function push(home: string, src: string, ...flags: string[]): void {
  const r = spawnSync(process.execPath, [BIN, 'push', `local:${home}`, '-w', src, ...flags], {
    encoding: 'utf8',
    env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state') },
  });
  expect(r.status, r.stderr).toBe(0);
}

function tree(dir: string, files: Record<string, string>): void {
  for (const [p, c] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    fs.writeFileSync(path.join(dir, p), c);
  }
}

/** Every file and directory under `dir`, relative, sorted; with each file's content. */
function listing(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of fs.readdirSync(dir, { recursive: true }) as string[]) {
    const abs = path.join(dir, rel);
    out[rel] = fs.lstatSync(abs).isDirectory() ? '<dir>' : fs.readFileSync(abs, 'utf8');
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** Source A (with an ignore rule) and source B, with one path in common, in a fresh directory. */
function sources(name: string): { home: string; dest: string; a: string; b: string } {
  const base = path.join(work, name);
  const a = path.join(base, 'a');
  const b = path.join(base, 'b');
  tree(a, { 'a.txt': 'from A\n', 'shared.txt': 'A\n', 'lib/a.py': 'a = 1\n', '.gitignore': 'cache/\n' });
  tree(b, { 'b.txt': 'from B\n', 'shared.txt': 'B\n', 'lib/b.py': 'b = 1\n', 'only-b/deep/x': 'x\n' });
  const home = path.join(base, 'home');
  return { home, dest: path.join(home, 'sky_workdir'), a, b };
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-sources-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('--delete after another source pushed to the same destination', () => {
  it('push -w A, push -w B, push -w A --delete: the destination is A, ignored paths kept', () => {
    const { home, dest, a, b } = sources('mirror');
    push(home, a);
    push(home, b);
    tree(dest, { 'job.txt': 'a job wrote this\n', 'cache/blob': 'ignored by A\n' });
    push(home, a, '--delete');
    expect(listing(dest)).toEqual({ ...listing(a), cache: '<dir>', 'cache/blob': 'ignored by A\n' });
  });

  it('also when A pushed again without --delete in between (its next push only carries changes)', () => {
    const { home, dest, a, b } = sources('mirror-later');
    push(home, a);
    push(home, b);
    push(home, a);
    expect(fs.existsSync(path.join(dest, 'b.txt'))).toBe(true);
    fs.writeFileSync(path.join(a, 'a.txt'), 'A changed\n');
    push(home, a, '--delete');
    expect(listing(dest)).toEqual(listing(a));
    // B's next push finds the destination changed and places its files again.
    push(home, b);
    expect(fs.readFileSync(path.join(dest, 'only-b/deep/x'), 'utf8')).toBe('x\n');
  });
});

describe('without --delete', () => {
  it('never removes what another source or a job placed, only what the pushing source itself deleted', () => {
    const { home, dest, a, b } = sources('default');
    push(home, a);
    push(home, b);
    tree(dest, { 'job.txt': 'a job wrote this\n' });
    fs.rmSync(path.join(a, 'lib/a.py'));
    push(home, a);
    push(home, a);
    const after = listing(dest);
    expect(after['lib/a.py']).toBeUndefined();
    expect(after['shared.txt']).toBe('A\n');
    for (const p of ['b.txt', 'lib/b.py', 'only-b/deep/x', 'job.txt', 'a.txt']) expect(after[p], p).toBeDefined();
  });
});

// rsync skips deletions after an I/O error on the sending side; `--delete` here keeps whatever the source has but
// could not read (a file it cannot open, a directory it cannot list). Root reads any file, so as root the pushes
// run as nobody (setpriv); the read then fails at open, as it does for a user's unreadable file.
describe('--delete with parts of the source that cannot be read', () => {
  const NOBODY = 65534;
  const asRoot = process.getuid?.() === 0;

  function pushAs(home: string, src: string, state: string, ...flags: string[]): { status: number | null; stderr: string } {
    const args = [BIN, 'push', `local:${home}`, '-w', src, ...flags];
    const env = { ...process.env, SKYSYNC_STATE_DIR: state, SKYSYNC_CONTROL_PERSIST: '0', SKYSYNC_WATCH_PERSIST: '0', HOME: home };
    const r = asRoot
      ? spawnSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, ...args], { encoding: 'utf8', env })
      : spawnSync(process.execPath, args, { encoding: 'utf8', env });
    return { status: r.status, stderr: r.stderr };
  }

  /** Sources A and B and a home, all the pushing user's. */
  function unreadableSetup(name: string) {
    const s = sources(name);
    tree(s.a, { 'secret.txt': 'kept\n', 'locked/inner.txt': 'inner\n' });
    const base = path.dirname(s.a);
    fs.mkdirSync(s.home, { recursive: true });
    fs.chmodSync(work, 0o755);
    if (asRoot) spawnSync('chown', ['-R', `${NOBODY}:${NOBODY}`, base]);
    return { ...s, state: (n: string) => path.join(base, `state-${n}`) };
  }

  function lock(a: string): void {
    fs.chmodSync(path.join(a, 'secret.txt'), 0o000);
    fs.chmodSync(path.join(a, 'locked'), 0o000);
  }

  afterAll(() => {
    // So that the scratch directory can be removed by whoever runs the tests.
    for (const d of fs.readdirSync(work, { recursive: true }) as string[]) {
      if (/(^|\/)(secret\.txt|locked)$/.test(d)) fs.chmodSync(path.join(work, d), 0o755);
    }
  });

  it('after another source pushed: the remote copies stay, each read error is listed, exit 3; the rest is mirrored', () => {
    const { home, dest, a, b, state } = unreadableSetup('unreadable-after-b');
    expect(pushAs(home, a, state('1')).status).toBe(0);
    expect(pushAs(home, b, state('1')).status).toBe(0);
    lock(a);
    const r = pushAs(home, a, state('1'), '--delete');
    expect(r.status, r.stderr).toBe(3);
    expect(fs.readFileSync(path.join(dest, 'secret.txt'), 'utf8')).toBe('kept\n');
    expect(fs.readFileSync(path.join(dest, 'locked/inner.txt'), 'utf8')).toBe('inner\n');
    expect(r.stderr).toMatch(/^failed: secret\.txt: .*permission denied/im);
    expect(r.stderr).toMatch(/^failed: locked: .*permission denied/im);
    // What B placed is gone all the same.
    for (const p of ['b.txt', 'lib/b.py', 'only-b']) expect(fs.existsSync(path.join(dest, p)), p).toBe(false);
  });

  it('with the client state lost, and again on the next push', () => {
    const { home, dest, a, state } = unreadableSetup('unreadable-fresh');
    expect(pushAs(home, a, state('1')).status).toBe(0);
    lock(a);
    for (const n of ['2', '2']) {
      const r = pushAs(home, a, state(n), '--delete');
      expect(r.status, r.stderr).toBe(3);
      expect(fs.readFileSync(path.join(dest, 'secret.txt'), 'utf8')).toBe('kept\n');
      expect(fs.readFileSync(path.join(dest, 'locked/inner.txt'), 'utf8')).toBe('inner\n');
      expect(r.stderr).toMatch(/^failed: secret\.txt: .*permission denied/im);
      // The remote's copy of the directory keeps its mode: given none, it could not be looked into.
      expect(r.stderr).not.toMatch(/overwritten/);
      expect(fs.statSync(path.join(dest, 'locked')).mode & 0o777).toBe(0o755);
    }
    fs.chmodSync(path.join(a, 'secret.txt'), 0o644);
    fs.chmodSync(path.join(a, 'locked'), 0o755);
    const r = pushAs(home, a, state('2'), '--delete');
    expect(r.status, r.stderr).toBe(0);
    expect(listing(dest)).toEqual(listing(a));
  });
});
