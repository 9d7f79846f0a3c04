// The scan's ignore rules against git's own answer, on the same trees.
//
// skysync chooses the rules as SkyPilot does (a root `.skyignore` means `.skyignore` files at every level and nothing
// else; otherwise `.gitignore` at every level plus the root `.git/info/exclude`) and applies them with git's
// semantics. So for every tree here, the files and symlinks `scan` returns must be exactly what
// `git ls-files --cached --others --exclude-standard` lists on that tree, with the user's global excludes switched
// off. For the `.skyignore` case git runs on a copy where each `.skyignore` is renamed to `.gitignore`.
//
// Git never lists what is inside a `.git` directory, and skysync syncs `.git/` on purpose. Paths with a `.git`
// component are compared separately: they must be in the scan exactly when `git check-ignore --no-index` says no
// rule excludes them.
//
// Git runs with its own git dir outside the tree (`--git-dir`, `--work-tree`), so the trees are never modified and
// need not be repositories; the tree's `.git/info/exclude` is copied into that git dir when it applies.
//
// Paths cross from the native addon as latin1 strings (one char per byte); the same convention is used here for
// building trees and for reading git's `-z` output, so names that are not UTF-8 compare byte for byte.

import { isUtf8 } from 'node:buffer';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as Native from '../native/index.js';

const require = createRequire(import.meta.url);
const NATIVE_PATH = require.resolve('../native/index.cjs');
const native = require(NATIVE_PATH) as typeof Native;

// ----------------------------------------------------------------------------------------------------------------
// trees

/** A tree: latin1 relative path -> file content (latin1), a symlink, or an empty directory. */
type Node = string | { link: string } | { dir: true };
type Spec = Record<string, Node>;

const B = (s: string): Buffer => Buffer.from(s, 'latin1');

let scratch = '';
let gitHome = '';
let counter = 0;

function tempDir(label: string): string {
  const dir = path.join(scratch, `${label}-${counter++}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

function build(root: string, spec: Spec): void {
  for (const [rel, node] of Object.entries(spec)) {
    const abs = B(`${root}/${rel}`);
    const parent = B(path.posix.dirname(`${root}/${rel}`));
    fs.mkdirSync(parent, { recursive: true });
    if (typeof node === 'string') fs.writeFileSync(abs, B(node));
    else if ('link' in node) fs.symlinkSync(B(node.link), abs);
    else fs.mkdirSync(abs, { recursive: true });
  }
}

/** Every path under `root`, latin1, without following symlinks. */
function walk(root: string): { path: string; kind: 'file' | 'dir' | 'symlink' | 'other' }[] {
  const out: { path: string; kind: 'file' | 'dir' | 'symlink' | 'other' }[] = [];
  const visit = (rel: string): void => {
    const abs = B(rel ? `${root}/${rel}` : root);
    for (const name of fs.readdirSync(abs, { encoding: 'buffer' })) {
      const childRel = rel ? `${rel}/${name.toString('latin1')}` : name.toString('latin1');
      const st = fs.lstatSync(B(`${root}/${childRel}`));
      const kind = st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
      out.push({ path: childRel, kind });
      if (kind === 'dir') visit(childRel);
    }
  };
  visit('');
  return out;
}

const isGitInternal = (p: string): boolean => p.split('/').includes('.git');

const _isRegularFile = (abs: string): boolean => {
  try {
    return fs.lstatSync(B(abs)).isFile();
  } catch {
    return false;
  }
};

/** Follows symlinks, as the choice of the mode does. */
const isFileFollowing = (abs: string): boolean => {
  try {
    return fs.statSync(B(abs)).isFile();
  } catch {
    return false;
  }
};

// ----------------------------------------------------------------------------------------------------------------
// git's answer

/** Environment for git: no system or global config, no HOME or XDG ignore file. */
function gitEnv(): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: gitHome,
    XDG_CONFIG_HOME: path.join(gitHome, '.config'),
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    LC_ALL: 'C',
  };
}

const GIT_OPTS = ['-c', 'core.excludesFile=/dev/null', '-c', 'safe.directory=*', '-c', 'core.ignoreCase=false'];

function git(gitDir: string, workTree: string, args: string[], input?: Buffer, env = gitEnv()): Buffer {
  const r = spawnSync('git', [...GIT_OPTS, `--git-dir=${gitDir}`, `--work-tree=${workTree}`, ...args], {
    env,
    input,
    maxBuffer: 256 << 20,
  });
  // check-ignore exits 1 when nothing is ignored.
  if (r.status !== 0 && !(args[0] === 'check-ignore' && r.status === 1)) {
    throw new Error(`git ${args.join(' ')} failed (${r.status}): ${r.stderr.toString()}`);
  }
  return r.stdout;
}

function newGitDir(exclude: Buffer | null): string {
  const dir = tempDir('gitdir');
  execFileSync('git', ['init', '-q', '--bare', dir], { env: gitEnv() });
  execFileSync('git', ['--git-dir', dir, 'config', 'core.bare', 'false'], { env: gitEnv() });
  fs.rmSync(path.join(dir, 'info', 'exclude'), { force: true });
  if (exclude) fs.writeFileSync(path.join(dir, 'info', 'exclude'), exclude);
  return dir;
}

const splitZ = (out: Buffer): string[] =>
  out
    .toString('latin1')
    .split('\0')
    .filter((s) => s !== '');

interface GitView {
  /** Files and symlinks git lists, outside any `.git` directory. */
  listed: Set<string>;
  /** Files and symlinks inside `.git` directories that no rule excludes. */
  internal: Set<string>;
  mode: 'gitignore' | 'skyignore';
}

/**
 * What git says should be synced from `root`, with the rules skysync would choose. For the `.skyignore` mode, git
 * runs on a copy where `.skyignore` files take the place of `.gitignore` files (whose own paths stay, emptied, so
 * the listed paths are the same) and no exclude file applies.
 */
function gitView(root: string): GitView {
  const mode = isFileFollowing(`${root}/.skyignore`) ? 'skyignore' : 'gitignore';
  let workTree = root;
  let gitDir: string;
  const synthetic = new Set<string>();
  if (mode === 'gitignore') {
    const exclude = `${root}/.git/info/exclude`;
    gitDir = newGitDir(isFileFollowing(exclude) ? fs.readFileSync(B(exclude)) : null);
  } else {
    workTree = tempDir('skycopy');
    execFileSync('cp', ['-a', '--', `${root}/.`, workTree]);
    const dirs = [
      '',
      ...walk(workTree)
        .filter((e) => e.kind === 'dir')
        .map((e) => e.path),
    ];
    for (const d of dirs) {
      const at = (name: string): string => (d ? `${workTree}/${d}/${name}` : `${workTree}/${name}`);
      const rel = d ? `${d}/.gitignore` : '.gitignore';
      let sky: fs.Stats | null = null;
      let gi: fs.Stats | null = null;
      try {
        sky = fs.lstatSync(B(at('.skyignore')));
      } catch {}
      try {
        gi = fs.lstatSync(B(at('.gitignore')));
      } catch {}
      if (sky) {
        fs.rmSync(B(at('.gitignore')), { recursive: true, force: true });
        if (sky.isSymbolicLink()) {
          fs.symlinkSync(fs.readlinkSync(B(at('.skyignore')), { encoding: 'buffer' }), B(at('.gitignore')));
        } else if (sky.isDirectory()) fs.mkdirSync(B(at('.gitignore')));
        else fs.copyFileSync(B(at('.skyignore')), B(at('.gitignore')));
        if (!gi) synthetic.add(rel);
      } else if (gi && !gi.isDirectory()) {
        fs.rmSync(B(at('.gitignore')));
        fs.writeFileSync(B(at('.gitignore')), '');
      }
    }
    gitDir = newGitDir(null);
  }
  const listed = new Set<string>();
  for (const p of splitZ(git(gitDir, workTree, ['ls-files', '--cached', '--others', '--exclude-standard', '-z']))) {
    if (p.endsWith('/')) throw new Error(`git listed a nested repository ${p}; keep those out of compared trees`);
    if (!synthetic.has(p) && !isGitInternal(p)) listed.add(p);
  }
  const inside = walk(workTree)
    .filter((e) => (e.kind === 'file' || e.kind === 'symlink') && isGitInternal(e.path) && !synthetic.has(e.path))
    .map((e) => e.path);
  const internal = new Set<string>();
  if (inside.length > 0) {
    const ignored = new Set(splitZ(git(gitDir, workTree, ['check-ignore', '--no-index', '--stdin', '-z'], B(inside.join('\0') + '\0'))));
    for (const p of inside) if (!ignored.has(p)) internal.add(p);
  }
  return { listed, internal, mode };
}

// ----------------------------------------------------------------------------------------------------------------
// skysync's answer

interface ScanView {
  listed: Set<string>;
  internal: Set<string>;
  result: Native.ScanResult;
}

async function scanView(root: string): Promise<ScanView> {
  const result = await native.scan(root);
  const listed = new Set<string>();
  const internal = new Set<string>();
  for (const e of result.tree.entries()) {
    if (e.kind === 'dir') continue;
    (isGitInternal(e.path) ? internal : listed).add(e.path);
  }
  return { listed, internal, result };
}

// ----------------------------------------------------------------------------------------------------------------
// comparison

const show = (s: string): string => JSON.stringify(s).replace(/[\u0080-\u00ff]/g, (c) => `\\x${c.charCodeAt(0).toString(16)}`);

function describeTree(root: string): string {
  const lines: string[] = [];
  for (const e of walk(root).sort((a, b) => (a.path < b.path ? -1 : 1))) {
    if (isGitInternal(e.path) && !e.path.endsWith('info/exclude')) continue;
    const abs = B(`${root}/${e.path}`);
    let extra = '';
    if (e.kind === 'symlink') extra = ` -> ${show(fs.readlinkSync(abs, { encoding: 'buffer' }).toString('latin1'))}`;
    const base = path.posix.basename(e.path);
    if (e.kind === 'file' && (base === '.gitignore' || base === '.skyignore' || base === 'exclude')) {
      extra = `: ${show(fs.readFileSync(abs).toString('latin1'))}`;
    }
    lines.push(`  ${e.kind.padEnd(7)} ${show(e.path)}${extra}`);
  }
  return lines.join('\n');
}

function diffSets(a: Set<string>, b: Set<string>): string[] {
  return [...a].filter((x) => !b.has(x)).sort();
}

/** Scans `root`, asks git, and returns a description of every disagreement ('' when they agree). */
async function compare(root: string): Promise<{ problems: string; scan: ScanView; git: GitView }> {
  const [scan, gitAnswer] = [await scanView(root), gitView(root)];
  const problems: string[] = [];
  if (scan.result.stats.ignoreMode !== gitAnswer.mode) {
    problems.push(`mode: scan ${scan.result.stats.ignoreMode}, expected ${gitAnswer.mode}`);
  }
  const onlyScan = diffSets(scan.listed, gitAnswer.listed);
  const onlyGit = diffSets(gitAnswer.listed, scan.listed);
  if (onlyScan.length) problems.push(`synced but git ignores: ${onlyScan.map(show).join(', ')}`);
  if (onlyGit.length) problems.push(`ignored but git lists: ${onlyGit.map(show).join(', ')}`);
  const inScanOnly = diffSets(scan.internal, gitAnswer.internal);
  const inGitOnly = diffSets(gitAnswer.internal, scan.internal);
  if (inScanOnly.length) {
    problems.push(`.git content synced but excluded by a rule: ${inScanOnly.map(show).join(', ')}`);
  }
  if (inGitOnly.length) problems.push(`.git content missing from the scan: ${inGitOnly.map(show).join(', ')}`);
  return {
    problems: problems.length ? `${problems.join('\n')}\ntree:\n${describeTree(root)}` : '',
    scan,
    git: gitAnswer,
  };
}

async function expectSameAsGit(spec: Spec, setup?: (root: string) => void): Promise<{ scan: ScanView; git: GitView; root: string }> {
  const root = tempDir('tree');
  build(root, spec);
  setup?.(root);
  const r = await compare(root);
  expect(r.problems).toBe('');
  return { ...r, root };
}

// ----------------------------------------------------------------------------------------------------------------

beforeAll(() => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-ignore-vs-git-'));
  fs.chmodSync(scratch, 0o755);
  gitHome = tempDir('empty-home');
  fs.mkdirSync(path.join(gitHome, '.config'));
});

afterAll(() => {
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

// Each case is a tree; every one is compared with git. The comments name the SkyPilot complaint it covers.
const cases: Record<string, Spec> = {
  // #3298: rsync's dir-merge makes `data/*` match at any depth; in git a pattern with a slash is anchored to the
  // directory of the file that holds it.
  'data/* in a subdirectory ignore file': {
    'proj/.gitignore': 'data/*\n',
    'proj/data/a.bin': 'a',
    'proj/data/sub/b.bin': 'b',
    'proj/x/data/c.bin': 'c',
    'data/d.bin': 'd',
    'proj/keep.txt': 'k',
  },
  // #5492: `!` negation does nothing under rsync.
  'negation re-includes a file': {
    '.gitignore': '*.log\n!keep.log\n',
    'a.log': '',
    'keep.log': '',
    'd/keep.log': '',
    'd/other.log': '',
  },
  'negation cannot re-include a file inside an excluded directory': {
    '.gitignore': 'build/\n!build/keep.txt\n!keep-too.txt\nout\n!out/x\n',
    'build/keep.txt': '',
    'build/keep-too.txt': '',
    'build/other': '',
    'out/x': '',
    'src/build/y': '',
  },
  'negation works when only the contents are excluded': {
    '.gitignore': 'build/*\n!build/keep.txt\n/gen/**\n!/gen/**/\n!/gen/**/*.h\n',
    'build/keep.txt': '',
    'build/other': '',
    'build/sub/keep.txt': '',
    'gen/a.c': '',
    'gen/a.h': '',
    'gen/deep/b.h': '',
    'gen/deep/b.c': '',
  },
  'a deeper file overrides a shallower one, both ways': {
    '.gitignore': '*.tmp\n!important\n',
    'a.tmp': '',
    'sub/.gitignore': '!x.tmp\nimportant\n',
    'sub/x.tmp': '',
    'sub/y.tmp': '',
    'sub/important': '',
    important: '',
    'sub/deeper/.gitignore': '*\n!*/\n!*.c\n',
    'sub/deeper/a.c': '',
    'sub/deeper/a.h': '',
    'sub/deeper/more/b.c': '',
    'sub/deeper/more/b.o': '',
  },
  // #7262, #8812: nested `.skyignore` files only counted when the root had one; with a root `.skyignore`, nothing
  // from `.gitignore` applies.
  'nested .skyignore with a root .skyignore': {
    '.skyignore': '*.ckpt\n/results\n',
    '.gitignore': 'src\n*.py\n',
    'model.ckpt': '',
    'results/r.csv': '',
    'src/train.py': '',
    'src/.skyignore': 'scratch/\n!best.ckpt\n',
    'src/.gitignore': '*\n',
    'src/scratch/tmp': '',
    'src/best.ckpt': '',
    'src/results/kept': '',
    '.git/info/exclude': 'src/train.py\n',
  },
  'an empty root .skyignore still switches the mode': {
    '.skyignore': '',
    '.gitignore': '*\n',
    a: '',
    'sub/.skyignore': 'b\n',
    'sub/b': '',
    'sub/c': '',
  },
  'nested .skyignore without a root one is not a rules file': {
    '.gitignore': '*.log\n',
    'a.log': '',
    'sub/.skyignore': 'b\n',
    'sub/b': '',
    'sub/.gitignore': 'c\n',
    'sub/c': '',
  },
  'anchored patterns': {
    '.gitignore': '/foo\n/bar/\n/baz/x\n',
    foo: '',
    'sub/foo': '',
    'bar/a': '',
    'sub/bar/a': '',
    'baz/x': '',
    'baz/y': '',
    'sub/baz/x': '',
    'sub/.gitignore': '/only-here\n',
    'sub/only-here': '',
    'only-here': '',
    'sub/deeper/only-here': '',
  },
  'double-star patterns': {
    '.gitignore': '**/x\na/**/b\nlogs/**\n**/d/**/e\nfoo**bar\n',
    x: '',
    'p/x': '',
    'p/q/x/inside': '',
    'a/b': '',
    'a/m/b': '',
    'a/m/n/b': '',
    'c/a/b': '',
    'logs/1': '',
    'logs/deep/2': '',
    'p/logs/3': '',
    'd/e': '',
    'd/f/g/e': '',
    fooXbar: '',
    'foo/bar': '',
  },
  'double stars that are not whole components, and lone markers': {
    '.gitignore': 'a**/b\n**c/d\ne/**f\n!\n/\n!/\n\\/\n**/\n/**/g\nh/**/\nesc\\/aped\n',
    'a/b': '',
    'aX/b': '',
    'aX/Y/b': '',
    'c/d': '',
    'Xc/d': '',
    'Y/c/d': '',
    'e/f': '',
    'e/Xf': '',
    'e/X/f': '',
    g: '',
    'p/g': '',
    'h/i': '',
    'h/j/k': '',
    'esc/aped': '',
    other: '',
  },
  'directory-only patterns': {
    '.gitignore': 'build/\ncache/\n',
    'build/out': '',
    'src/build/out': '',
    'file/build': '',
    cache: 'a file named like a dir-only pattern',
    'real-build/x': '',
    'link/build': { link: '../real-build' },
  },
  'trailing spaces, escapes and comments': {
    '.gitignore':
      '# a comment\n' +
      '\\#hash\n' +
      '\\!bang\n' +
      'trail   \n' +
      'esc\\ \n' +
      'two\\  \n' +
      'sp ace\n' +
      'tab\t\n' +
      '  lead\n' +
      '*.crlf\r\n' +
      'lit\\*star\n' +
      'q\\?\n' +
      '\n' +
      '   \n' +
      '#notacomment-file\n',
    '#hash': '',
    '!bang': '',
    trail: '',
    'trail ': '',
    'esc ': '',
    esc: '',
    'two ': '',
    'two  ': '',
    'sp ace': '',
    'tab\t': '',
    tab: '',
    '  lead': '',
    lead: '',
    'a.crlf': '',
    'a.crlf\r': '',
    'lit*star': '',
    litXstar: '',
    'q?': '',
    qq: '',
    '#notacomment-file': '',
    plain: '',
  },
  'a UTF-8 byte order mark starts the file': {
    '.gitignore': '\xef\xbb\xbfbom\n',
    '.git/info/exclude': '\xef\xbb\xbfex\n',
    bom: '',
    ex: '',
    '\xef\xbb\xbfbom': '',
    sub: '',
  },
  'tracked-looking paths': {
    '.gitignore': '.git*\n!.gitignore\n!.github/\n*.orig\n',
    '.gitattributes': '',
    '.gitmodules': '',
    '.gitkeep': '',
    '.github/workflows/ci.yml': '',
    'x.git': '',
    '.git2/f': '',
    'sub/.gitkeep': '',
    'merge.orig': '',
    '.git/HEAD': 'ref: refs/heads/main\n',
    '.git/config': '',
    'sub/.git/config': 'not a repository: git skips any .git entry',
  },
  'the .git directory is synced unless a rule excludes it': {
    '.gitignore': '*.sample\nHEAD\nlogs/\n/objects\n',
    '.git/HEAD': 'ref: refs/heads/main\n',
    '.git/config': '',
    '.git/hooks/pre-commit.sample': '',
    '.git/logs/HEAD': '',
    '.git/objects/ab/cdef': '',
    '.git/refs/heads/main': '',
    '.git/info/exclude': 'config\n',
    'src/HEAD': '',
    'src/a': '',
  },
  'case sensitivity': {
    '.gitignore': '*.TXT\nFoo\n[A-C]*\n',
    'a.txt': '',
    'b.TXT': '',
    foo: '',
    Foo: '',
    Apple: '',
    apple: '',
    Dog: '',
  },
  'ignore files that are themselves ignored': {
    '.gitignore': '.gitignore\n*.x\n',
    'a.x': '',
    'b.y': '',
    'sub/.gitignore': '*\n',
    'sub/anything': '',
    'sub/deep/more': '',
    'other/.gitignore': '/.gitignore\n!a.x\n',
    'other/a.x': '',
    'ignored-dir/.gitignore': '!*\n',
    'ignored-dir/b.x': '',
    '.git/info/exclude': 'ignored-dir\n',
  },
  'a .skyignore that ignores itself': {
    '.skyignore': '.skyignore\n*.x\n',
    'a.x': '',
    b: '',
    'sub/.skyignore': '*\n!keep\n',
    'sub/keep': '',
    'sub/drop': '',
  },
  '.git/info/exclude has the lowest precedence': {
    '.git/info/exclude': '*.o\n/vendor\nlocal.cfg\n',
    '.gitignore': '!keep.o\n',
    'a.o': '',
    'keep.o': '',
    'vendor/lib': '',
    'sub/vendor/lib': '',
    'sub/.gitignore': '!local.cfg\n',
    'sub/local.cfg': '',
    'local.cfg': '',
  },
  'middle slashes anchor, leading **/ does not': {
    '.gitignore': 'doc/frotz\nfrotz2\n**/a/b\n*/mid\n',
    'doc/frotz': '',
    'x/doc/frotz': '',
    frotz2: '',
    'x/y/frotz2': '',
    'a/b': '',
    'q/a/b': '',
    'q/mid': '',
    mid: '',
    'q/r/mid': '',
  },
  'character classes and wildcards': {
    '.gitignore': '[a-c]x\n[!a]y\n[^b]z\n?w\n*[[:digit:]]*\n[[:upper:]][[:lower:]]\n[]]r\n[abc\n',
    ax: '',
    dx: '',
    ay: '',
    by: '',
    bz: '',
    cz: '',
    w: '',
    aw: '',
    'x/w': '',
    file9: '',
    Ab: '',
    AB: '',
    ']r': '',
    '[abc': '',
    a: '',
  },
  'symlinks are files to git, never followed': {
    '.gitignore': 'target-dir/\n*.lnk\n',
    'target-dir/a': '',
    'link-to-dir': { link: 'target-dir' },
    'x.lnk': { link: 'nowhere' },
    dangling: { link: 'nowhere' },
    loop1: { link: 'loop2' },
    loop2: { link: 'loop1' },
    'real/.gitignore': 'hidden\n',
    'real/hidden': '',
    'via-link': { link: 'real' },
  },
  'an ignore file that is a symlink is not read (git does not follow it)': {
    rules: 'a\n',
    'sub/.gitignore': { link: '../rules' },
    'sub/a': '',
    'sub/b': '',
  },
  // The mode is chosen as SkyPilot chooses it (a root `.skyignore` that exists, through a link too), but the link
  // itself is not read as rules, as git would not read a linked `.gitignore`.
  'a root .skyignore that is a symlink selects the mode but is not read': {
    'shared/.skyignore': 'a\n',
    '.skyignore': { link: 'shared/.skyignore' },
    '.gitignore': 'b\n',
    a: '',
    b: '',
    'sub/.skyignore': 'c\n',
    'sub/c': '',
  },
  'ignore files inside .git apply to .git content': {
    '.git/.gitignore': 'config\n',
    '.git/config': '',
    '.git/HEAD': '',
    '.git/refs/.gitignore': '*\n!heads/\n',
    '.git/refs/heads/main': '',
    '.git/refs/tags/v1': '',
    config: '',
  },
  // Git hands each line to wildmatch as a C string: a NUL ends the pattern, whatever bytes follow it. A binary file
  // named .gitignore (seed 584997922 of push-property.test.ts) had a line `*\0<random bytes>`, which ignores all.
  'a NUL ends a pattern line, even when the rest is not UTF-8': {
    '.gitignore': 'a*\0\xff\xfe junk\nb\0c\n#\0\ncc\0\xc3\n',
    a1: '',
    b: '',
    bc: '',
    c: '',
    cc: '',
    x: '',
  },
  'an ignore file that is a directory': {
    '.gitignore/x': '',
    a: '',
  },
  // Git matches bytes: `?` is one byte, so `?.bin` misses `\xc3\xa9.bin` (é in UTF-8, two bytes).
  'names that are not UTF-8, and ? against multi-byte names': {
    '.gitignore': '*.log\n/d?j?/\nsub/*.bin\n?.one\n??.two\n[\xc3\xa9]x\n',
    '\xc3\xa9.one': '',
    '\xe9.one': '',
    '\xc3\xa9.two': '',
    '\xe9.two': '',
    '\xc3\xa9x': '',
    '\xc3x': '',
    'caf\xe9.log': '',
    'caf\xe9.txt': '',
    '\xff\xfe': '',
    'd\xe9j\xe0/x': '',
    'sub/\x80.bin': '',
    'sub/ok-\xc3\xa9': '',
    'link\xe9': { link: 'target\xff' },
  },
  'whitelisting from the root': {
    '.gitignore': '/*\n!/src/\n!/README.md\n/src/**/*.gen\n',
    'README.md': '',
    LICENSE: '',
    'src/a.rs': '',
    'src/b.gen': '',
    'src/deep/c.gen': '',
    'docs/x': '',
  },
};

describe('ignore rules match git', () => {
  for (const [name, spec] of Object.entries(cases)) {
    it(name, async () => {
      await expectSameAsGit(spec);
    });
  }

  it('a git repository made by git init (hooks, refs, objects) with rules that reach into .git', async () => {
    const {
      scan,
      git: g,
      root,
    } = await expectSameAsGit({ '.gitignore': '*.sample\nobjects/\n', 'src/a.c': '', 'src/objects/b': '' }, (r) => {
      execFileSync('git', ['init', '-q', r], { env: gitEnv() });
      execFileSync('git', ['-C', r, 'add', '.'], { env: gitEnv() });
      fs.writeFileSync(path.join(r, '.git/info/exclude'), '*.c\n');
    });
    // .git is synced (on purpose: git works on the cluster), minus what the rules exclude.
    expect(scan.internal.has('.git/HEAD')).toBe(true);
    expect(scan.internal.has('.git/index')).toBe(true);
    expect(scan.internal.has('.git/info/exclude')).toBe(true);
    expect([...scan.internal].some((p) => p.endsWith('.sample'))).toBe(false);
    expect([...scan.internal].some((p) => p.startsWith('.git/objects/'))).toBe(false);
    expect(g.internal.size).toBe(scan.internal.size);
    expect(walk(root).some((e) => e.path.startsWith('.git/objects/'))).toBe(true);
    // The tree's own index tracks src/a.c (added before the exclude rule), so `git ls-files --cached` in that
    // repository still lists it. skysync goes by the rules alone (a sync has no index), which is why git is asked
    // with an empty index of its own everywhere in this file.
    const index = execFileSync('git', [...GIT_OPTS, '-C', root, 'ls-files', '--cached', '-z'], { env: gitEnv() });
    const tracked = splitZ(index);
    expect(tracked).toContain('src/a.c');
    expect(scan.listed.has('src/a.c')).toBe(false);
  });

  it('.git contents are in the scan when no rule names them', async () => {
    const { scan } = await expectSameAsGit({
      '.git/HEAD': '',
      '.git/config': '',
      '.git/info/exclude': '*.log\n',
      '.git/logs/a.log': '',
      '.git/hooks/pre-commit': '',
      'a.log': '',
    });
    expect([...scan.internal].sort()).toEqual(['.git/HEAD', '.git/config', '.git/hooks/pre-commit', '.git/info/exclude']);
    const excludeAll = await expectSameAsGit({ '.gitignore': '.git\n', '.git/HEAD': '', a: '' });
    expect(excludeAll.scan.internal.size).toBe(0);
    expect(excludeAll.scan.result.tree.entry('.git')).toBeNull();
  });

  it('a tree with .git/info/exclude that is not a repository still gets its rules', async () => {
    const { scan } = await expectSameAsGit({ '.git/info/exclude': 'secret\n', secret: '', public: '' });
    expect(scan.listed.has('secret')).toBe(false);
    expect(scan.listed.has('public')).toBe(true);
  });
});

// ----------------------------------------------------------------------------------------------------------------
// the user's global excludes never apply

describe('global git excludes do not leak in', () => {
  const spec: Spec = {
    '.gitignore': '*.o\n',
    'a.o': '',
    'notes.txt': '',
    'secret.key': '',
    'sub/more.txt': '',
    'sub/x.c': '',
  };

  function globalHome(): { env: NodeJS.ProcessEnv; xdgOnly: NodeJS.ProcessEnv } {
    const home = tempDir('global-home');
    fs.mkdirSync(path.join(home, '.config', 'git'), { recursive: true });
    fs.writeFileSync(path.join(home, '.config', 'git', 'ignore'), '*.txt\n');
    fs.writeFileSync(path.join(home, 'global-excludes'), '*.key\nsub/\n');
    fs.writeFileSync(path.join(home, '.gitconfig'), `[core]\n\texcludesFile = ${home}/global-excludes\n`);
    const base = { PATH: process.env.PATH, HOME: home, XDG_CONFIG_HOME: path.join(home, '.config'), LC_ALL: 'C' };
    return {
      env: { ...base, GIT_CONFIG_GLOBAL: path.join(home, '.gitconfig') },
      xdgOnly: { ...base, GIT_CONFIG_GLOBAL: path.join(home, 'missing-gitconfig') },
    };
  }

  /** Git's listing with the user's global config in effect (no `-c core.excludesFile=/dev/null`). */
  function gitWithGlobal(root: string, env: NodeJS.ProcessEnv): string[] {
    const gitDir = tempDir('gitdir');
    execFileSync('git', ['init', '-q', '--bare', gitDir], { env });
    execFileSync('git', ['--git-dir', gitDir, 'config', 'core.bare', 'false'], { env });
    const out = execFileSync('git', ['-c', 'safe.directory=*', `--git-dir=${gitDir}`, `--work-tree=${root}`, 'ls-files', '-o', '--exclude-standard', '-z'], { env });
    return splitZ(out).sort();
  }

  /** The scan's file list from a separate node process running with `env`. */
  function scanInChild(root: string, env: NodeJS.ProcessEnv): string[] {
    const script = `
      const n = require(${JSON.stringify(NATIVE_PATH)});
      n.scan(${JSON.stringify(root)}).then((r) => {
        process.stdout.write(JSON.stringify(r.tree.entries().filter((e) => e.kind !== 'dir').map((e) => e.path)));
      });`;
    const out = execFileSync(process.execPath, ['-e', script], { env, encoding: 'utf8' });
    return (JSON.parse(out) as string[]).sort();
  }

  it('with core.excludesFile in GIT_CONFIG_GLOBAL, and with only $XDG_CONFIG_HOME/git/ignore', async () => {
    const root = tempDir('tree');
    build(root, spec);
    const baseline = (await scanView(root)).listed;
    expect([...baseline].sort()).toEqual(['.gitignore', 'notes.txt', 'secret.key', 'sub/more.txt', 'sub/x.c']);
    expect((await compare(root)).problems).toBe('');
    const { env, xdgOnly } = globalHome();
    // The setup is effective: git itself does apply these files.
    expect(gitWithGlobal(root, env)).toEqual(['.gitignore', 'notes.txt']);
    expect(gitWithGlobal(root, xdgOnly)).toEqual(['.gitignore', 'secret.key', 'sub/x.c']);
    // skysync does not.
    expect(scanInChild(root, env)).toEqual([...baseline].sort());
    expect(scanInChild(root, xdgOnly)).toEqual([...baseline].sort());
    // Nor in this process with the variables set.
    const saved = { ...process.env };
    try {
      Object.assign(process.env, env);
      expect([...(await scanView(root)).listed].sort()).toEqual([...baseline].sort());
    } finally {
      for (const k of Object.keys(env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });
});

// ----------------------------------------------------------------------------------------------------------------
// known limitation, kept visible

describe('known limitations', () => {
  // Patterns are compiled by the `ignore` crate, which takes UTF-8 text: a pattern line that is not UTF-8 cannot be
  // represented and is skipped with an 'ignore-file' warning (git applies it byte-wise). Names that are not UTF-8 are
  // matched byte-exact by UTF-8 patterns (see the case above).
  it('a pattern line that is not UTF-8 is skipped, with a warning', async () => {
    const root = tempDir('tree');
    build(root, { '.gitignore': 'caf\xe9\n*.log\n', 'caf\xe9': '', 'a.log': '', b: '' });
    const { scan, git: g } = await compare(root);
    expect([...g.listed].sort()).toEqual(['.gitignore', 'b']);
    expect([...scan.listed].sort()).toEqual(['.gitignore', 'b', 'caf\xe9']);
    expect(scan.result.warnings.map((w) => w.kind)).toEqual(['ignore-file']);
    expect(scan.result.warnings[0]!.message).toMatch(/UTF-8/);
  });

  // Git's wildmatch lets a backslash escape a character inside a bracket expression; the `ignore` crate's globs
  // take a backslash inside brackets literally, so `[\]]x` is the class `[\]` followed by `]x`.
  it('a backslash inside a bracket expression', async () => {
    const root = tempDir('tree');
    build(root, { '.gitignore': '[\\]]x\n', ']x': '', '\\x': '', '\\]x': '', a: '' });
    const { scan, git: g } = await compare(root);
    expect([...g.listed].sort()).toEqual(['.gitignore', '\\]x', '\\x', 'a']);
    expect([...scan.listed].sort()).toEqual(['.gitignore', '\\x', ']x', 'a']);
  });
});

// ----------------------------------------------------------------------------------------------------------------
// random trees and rules against git

/** mulberry32: small, seedable, good enough for test inputs. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NAMES = [
  'a',
  'b',
  'c',
  'x',
  'data',
  'build',
  'logs',
  'src',
  'sub',
  'deep',
  'node_modules',
  'Foo',
  'foo',
  'keep.log',
  'x.log',
  'y.LOG',
  'bar.txt',
  'z.o',
  '.hidden',
  'sp ace',
  'trail ',
  '#h',
  '!b',
  'caf\xe9',
  'q?',
  'HEAD',
  'a.sample',
  '.gitkeep',
  '\xc3\xa9',
  '\xc3\xa9.o',
];
const DIR_NAMES = ['a', 'b', 'data', 'build', 'logs', 'src', 'sub', 'deep', 'node_modules', 'Foo', 'x', 'd\xe9j'];
const EXTS = ['log', 'LOG', 'txt', 'o', 'sample'];

// Pattern lines must be UTF-8 (see 'known limitations'); names in the tree need not be.
const utf8 = (s: string): boolean => isUtf8(B(s));
const PATTERN_NAMES = [...NAMES, ...DIR_NAMES].filter(utf8);
const PATTERN_DIRS = DIR_NAMES.filter(utf8);

function randomPattern(r: () => number): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const name = (): string => pick(PATTERN_NAMES);
  const dir = (): string => pick(PATTERN_DIRS);
  const escapeGlob = (s: string): string =>
    s
      .replace(/^([#!])/, '\\$1')
      .replace(/([?*[\]])/g, '\\$1')
      .replace(/ $/, '\\ ');
  const templates: (() => string)[] = [
    () => escapeGlob(name()),
    () => `/${escapeGlob(name())}`,
    () => `${escapeGlob(dir())}/`,
    () => `/${escapeGlob(dir())}/`,
    () => `!${escapeGlob(name())}`,
    () => `!${escapeGlob(dir())}/`,
    () => `!/${escapeGlob(name())}`,
    () => `${escapeGlob(dir())}/${escapeGlob(name())}`,
    () => `${escapeGlob(dir())}/*`,
    () => `!${escapeGlob(dir())}/*`,
    () => `${escapeGlob(dir())}/**`,
    () => `**/${escapeGlob(name())}`,
    () => `**/${escapeGlob(dir())}/${escapeGlob(name())}`,
    () => `${escapeGlob(dir())}/**/${escapeGlob(name())}`,
    () => `*.${pick(EXTS)}`,
    () => `!*.${pick(EXTS)}`,
    () => '*',
    () => '!*/',
    () => '**',
    () => `${escape(name()).slice(0, 1)}*`,
    () => '?',
    () => '[a-c]*',
    () => '[!a-c]*',
    () => '*[[:upper:]]*',
    () => `${escape(name())}   `,
    () => `# ${name()}`,
    () => '',
    () => '\\#h',
    () => '\\!b',
    () => 'trail\\ ',
    () => 'sp ace',
    () => `*/${escape(name())}`,
    () => `/*/${escape(name())}`,
    () => '.git*',
    () => '.gitignore',
    () => '.skyignore',
    () => 'HEAD',
    () => '*.sample',
    () => `!${escape(dir())}/**/`,
    () => `${escape(dir())}/**/*.${pick(EXTS)}`,
    () => '[abc',
    () => '**/',
    () => '/**',
    () => '*/*',
    () => `**/*.${pick(EXTS)}`,
    () => `!**/${escape(name())}`,
    () => `**/${escape(dir())}/**`,
    () => `${escape(dir())}/**/*`,
    () => '[[:digit:]]*',
    () => `${escape(name())}/`,
    () => '.gitignore/',
  ];
  for (;;) {
    const pattern = pick(templates)();
    if (utf8(pattern)) return pattern;
  }
}

interface RandomTree {
  spec: Spec;
  mode: string;
}

function randomTree(r: () => number): RandomTree {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const spec: Spec = {};
  const dirs: string[] = [''];
  const join = (d: string, n: string): string => (d ? `${d}/${n}` : n);
  const nDirs = 1 + Math.floor(r() * 7);
  for (let i = 0; i < nDirs; i++) {
    const parent = pick(dirs);
    if (parent.split('/').length >= 3) continue;
    const d = join(parent, pick(DIR_NAMES));
    if (!dirs.includes(d)) dirs.push(d);
  }
  const taken = (p: string): boolean => p in spec || dirs.includes(p) || Object.keys(spec).some((k) => k.startsWith(`${p}/`)) || dirs.some((d) => d.startsWith(`${p}/`));
  const parentIsFile = (p: string): boolean => {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) if (parts.slice(0, i).join('/') in spec) return true;
    return false;
  };
  for (const d of dirs) {
    const nFiles = Math.floor(r() * 5);
    for (let i = 0; i < nFiles; i++) {
      const p = join(d, pick(NAMES));
      if (taken(p) || parentIsFile(p)) continue;
      spec[p] = r() < 0.1 ? { link: pick(['a', '../a', 'nowhere', '.', pick(DIR_NAMES)]) } : `content of ${p}`;
    }
    if (d && !Object.keys(spec).some((k) => k.startsWith(`${d}/`)) && !taken(`${d}/`)) spec[join(d, 'f')] = '';
  }
  const modeRoll = r();
  const mode = modeRoll < 0.55 ? 'gitignore' : modeRoll < 0.85 ? 'skyignore' : 'both';
  const rules = (): string => {
    const n = 1 + Math.floor(r() * 5);
    const lines: string[] = [];
    for (let i = 0; i < n; i++) lines.push(randomPattern(r));
    return lines.join(r() < 0.1 ? '\r\n' : '\n') + (r() < 0.8 ? '\n' : '');
  };
  for (const d of dirs) {
    if (d && r() < 0.5) continue;
    const wantGit = mode !== 'skyignore' || r() < 0.3;
    const wantSky = mode !== 'gitignore' || r() < 0.2;
    if (wantGit && !taken(join(d, '.gitignore'))) spec[join(d, '.gitignore')] = rules();
    if (wantSky && !taken(join(d, '.skyignore'))) spec[join(d, '.skyignore')] = rules();
  }
  // The mode is decided by the root file.
  if (mode !== 'gitignore' && !('.skyignore' in spec)) spec['.skyignore'] = rules();
  if (mode === 'gitignore') delete spec['.skyignore'];
  // Now and then an ignore file that is a symlink (git does not read it) or an empty directory.
  if (r() < 0.1) {
    const d = pick(dirs);
    const link = join(d, mode === 'gitignore' ? '.gitignore' : '.skyignore');
    if (d && !taken(link)) spec[link] = { link: '../.gitignore' };
  }
  if (r() < 0.1) {
    const d = join(pick(dirs), 'empty');
    if (!taken(d) && !parentIsFile(d)) spec[d] = { dir: true };
  }
  if (r() < 0.4) spec['.git/info/exclude'] = rules();
  if (r() < 0.3) {
    spec['.git/HEAD'] = 'ref: refs/heads/main\n';
    spec['.git/hooks/pre-commit.sample'] = '';
    spec['.git/logs/HEAD'] = '';
  }
  return { spec, mode };
}

describe('random trees and rules match git', () => {
  const seed = process.env.SKYSYNC_SEED ? Number(process.env.SKYSYNC_SEED) : Math.floor(Math.random() * 2 ** 31);
  const rounds = process.env.SKYSYNC_ROUNDS ? Number(process.env.SKYSYNC_ROUNDS) : 120;

  it(`${rounds} rounds (seed ${seed}; set SKYSYNC_SEED to replay)`, { timeout: 600_000 }, async () => {
    const r = rng(seed);
    // The generator must not be vacuous: count rounds where rules excluded something, and where .git was checked.
    let excluding = 0;
    let withInternal = 0;
    let skyMode = 0;
    for (let round = 0; round < rounds; round++) {
      const { spec, mode } = randomTree(r);
      const root = tempDir(`random-${round}`);
      build(root, spec);
      const { problems, scan } = await compare(root);
      if (problems) {
        throw new Error(`SKYSYNC_SEED=${seed}, round ${round} (${mode}) disagrees with git:\n${problems}`);
      }
      if (scan.result.stats.ignored > 0) excluding++;
      if (scan.internal.size > 0) withInternal++;
      if (scan.result.stats.ignoreMode === 'skyignore') skyMode++;
      fs.rmSync(root, { recursive: true, force: true });
    }
    console.log(`seed ${seed}: ${rounds} rounds, ${excluding} excluded something, ` + `${withInternal} synced .git content, ${skyMode} in .skyignore mode`);
    expect(excluding).toBeGreaterThan(rounds / 2);
    expect(withInternal).toBeGreaterThan(rounds / 10);
    expect(skyMode).toBeGreaterThan(rounds / 10);
  });
});

// ----------------------------------------------------------------------------------------------------------------
// what the scan reports besides the file list

describe('scan reports', () => {
  it('symlinks with their targets, special files skipped with a warning, names byte-exact', async () => {
    const root = tempDir('tree');
    build(root, {
      'caf\xe9/\xff.bin': 'x',
      'l\xe9': { link: 'caf\xe9/\xff.bin' },
      loop: { link: 'loop' },
      dangling: { link: 'no/such/thing' },
      'dir-link': { link: 'caf\xe9' },
    });
    execFileSync('mkfifo', [path.join(root, 'fifo')]);
    const sockScript = `
      const s = require('net').createServer().listen(${JSON.stringify(path.join(root, 'sock'))}, () => {
        process.stdout.write('ready'); setTimeout(() => process.exit(0), 60000);
      });`;
    const child = spawn(process.execPath, ['-e', sockScript]);
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout!.once('data', () => resolve());
        child.once('error', reject);
      });
      const { result } = await scanView(root);
      const entries = result.tree.entries();
      expect(entries.map((e) => [e.path, e.kind, e.target])).toEqual([
        ['caf\xe9', 'dir', undefined],
        ['caf\xe9/\xff.bin', 'file', undefined],
        ['dangling', 'symlink', 'no/such/thing'],
        ['dir-link', 'symlink', 'caf\xe9'],
        ['loop', 'symlink', 'loop'],
        ['l\xe9', 'symlink', 'caf\xe9/\xff.bin'],
      ]);
      expect(result.warnings.map((w) => [w.kind, w.path])).toEqual([
        ['special', 'fifo'],
        ['special', 'sock'],
      ]);
      // The latin1 path addresses the same bytes on disk.
      expect(fs.readFileSync(B(`${root}/caf\xe9/\xff.bin`)).toString()).toBe('x');
      expect(result.tree.entry('caf\xe9/\xff.bin')?.size).toBe(1);
    } finally {
      child.kill();
    }
  });

  it('unreadable directories and files, as an unprivileged user: reported, and carried, not deleted', async (ctx) => {
    const nobody = String(65534);
    const setpriv = ['setpriv', '--reuid', nobody, '--regid', nobody, '--clear-groups'];
    const probe = spawnSync(setpriv[0]!, [...setpriv.slice(1), 'true']);
    const asRoot = process.getuid?.() === 0;
    if (asRoot && probe.status !== 0) {
      const why = probe.error ? String(probe.error) : String(probe.stderr);
      console.log(`skipped: running as root, and setpriv cannot switch to uid ${nobody}: ${why}`);
      ctx.skip();
      return;
    }
    const root = tempDir('perm-tree');
    build(root, {
      'open/a': 'a',
      'locked/x': 'x',
      'locked/sub/y': 'y',
      'noexec/z': 'z',
      'noexec/zdir/w': 'w',
      'secret-file': 's',
      later: 'l',
    });
    const hourAgo = new Date(Date.now() - 3600_000);
    for (const e of walk(root)) {
      if (e.kind === 'file') fs.utimesSync(B(`${root}/${e.path}`), hourAgo, hourAgo);
      if (e.kind === 'dir') fs.chmodSync(B(`${root}/${e.path}`), 0o755);
    }
    fs.chmodSync(root, 0o755);
    // A completed sync: a scan with every file's recipe recorded.
    const first = await native.scan(root);
    const files = first.tree
      .entries()
      .filter((e) => e.kind === 'file')
      .map((e) => e.path);
    const recipes = await native.chunkFiles(root, files);
    for (const [i, f] of files.entries()) expect(first.tree.setRecipe(f, recipes[i]!.recipe!.chunks)).toBe(true);
    const snap = path.join(tempDir('perm-state'), 'prev.snap');
    first.tree.save(snap);
    fs.chmodSync(snap, 0o644);
    fs.chmodSync(path.dirname(snap), 0o755);

    fs.chmodSync(path.join(root, 'locked'), 0o000);
    fs.chmodSync(path.join(root, 'noexec'), 0o644);
    fs.chmodSync(path.join(root, 'secret-file'), 0o000);
    fs.rmSync(path.join(root, 'later'));
    const script = `
      const n = require(${JSON.stringify(NATIVE_PATH)});
      (async () => {
        const prev = n.Tree.load(${JSON.stringify(snap)});
        const r = await n.scan(${JSON.stringify(root)}, prev);
        const chunked = await n.chunkFiles(${JSON.stringify(root)}, ['secret-file', 'open/a']);
        process.stdout.write(JSON.stringify({
          uid: process.getuid(),
          changes: r.changes.map((c) => [c.entry.path, c.status]),
          warnings: r.warnings.map((w) => [w.kind, w.path, w.message]),
          entries: r.tree.entries().map((e) => e.path),
          lockedRecipe: !!r.tree.recipe('locked/x') && !!r.tree.recipe('noexec/zdir/w'),
          chunkErrors: chunked.map((c) => c.error ?? null),
        }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const cmd = asRoot ? [...setpriv, process.execPath, '-e', script] : [process.execPath, '-e', script];
    let out: string;
    try {
      out = execFileSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', env: { PATH: process.env.PATH, HOME: '/tmp' } });
    } finally {
      fs.chmodSync(path.join(root, 'locked'), 0o755);
      fs.chmodSync(path.join(root, 'noexec'), 0o755);
    }
    const got = JSON.parse(out) as {
      uid: number;
      changes: [string, string][];
      warnings: [string, string, string][];
      entries: string[];
      lockedRecipe: boolean;
      chunkErrors: (string | null)[];
    };
    expect(got.uid).not.toBe(0);
    // The unreadable directory, and each entry of the directory that can be listed but not searched.
    expect(got.warnings.map(([k, p]) => [k, p])).toEqual([
      ['unreadable', 'locked'],
      ['unreadable', 'noexec/z'],
      ['unreadable', 'noexec/zdir'],
    ]);
    expect(got.warnings[0]![2]).toMatch(/permission denied/i);
    // Only the real deletion is a deletion; the mode changes are modifications; nothing under `locked` or
    // `noexec` is reported.
    expect(got.changes).toEqual([
      ['later', 'deleted'],
      ['locked', 'modified'],
      ['noexec', 'modified'],
      ['secret-file', 'modified'],
    ]);
    for (const p of ['locked/x', 'locked/sub', 'locked/sub/y', 'noexec/z', 'noexec/zdir', 'noexec/zdir/w']) {
      expect(got.entries).toContain(p);
    }
    expect(got.lockedRecipe).toBe(true);
    // The unreadable file is listed, and reading it fails with the cause.
    expect(got.entries).toContain('secret-file');
    expect(got.chunkErrors[0]).toMatch(/permission denied/i);
    expect(got.chunkErrors[1]).toBeNull();
  });

  it('an ignore file that is a symlink is reported, not read', async () => {
    const root = tempDir('tree');
    build(root, { rules: 'a\n', '.gitignore': { link: 'rules' }, a: '', 'sub/.gitignore': { link: '../rules' } });
    const { result, listed } = await scanView(root);
    expect([...listed].sort()).toEqual(['.gitignore', 'a', 'rules', 'sub/.gitignore']);
    expect(result.warnings.map((w) => [w.kind, w.path])).toEqual([
      ['ignore-file', '.gitignore'],
      ['ignore-file', 'sub/.gitignore'],
    ]);
  });

  it('a corrupted snapshot file is an error', async () => {
    const root = tempDir('tree');
    build(root, { a: 'a', 'b/c': 'c' });
    const { tree } = await native.scan(root);
    const file = path.join(tempDir('state'), 'snap');
    tree.save(file);
    expect(native.Tree.load(file).entries()).toEqual(tree.entries());
    const good = fs.readFileSync(file);
    const bad = Buffer.from(good);
    bad[Math.floor(bad.length / 2)]! ^= 1;
    for (const data of [bad, good.subarray(0, good.length - 1), Buffer.from('garbage'), Buffer.alloc(0)]) {
      fs.writeFileSync(file, data);
      expect(() => native.Tree.load(file)).toThrow(/corrupted snapshot/);
    }
  });
});
