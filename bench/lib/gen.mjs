// Deterministic generation of the benchmark data: a source-like tree of many small files with ignore rules and
// ignored junk, plus large random files. Cached under CACHE_ROOT/<profile>; regenerated when the READY marker is
// missing or describes another configuration.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CACHE_ROOT, KiB, MiB, log, nowMs, rmrf, run } from './common.mjs';

const GEN_VERSION = 3;

export const PROFILES = {
  full: {
    files: 100_000, // regular files that are *not* ignored (synced)
    dirs: 6_000,
    maxDepth: 9,
    corpus: 8 * MiB,
    pycacheDirs: 400,
    buildDirs: 60,
    strayJunk: 500,
    distFiles: 300,
    nestedIgnores: 30,
    symlinks: 50,
    large: [512 * MiB, 384 * MiB, 256 * MiB], // 1152 MiB
  },
  smoke: {
    files: 300,
    dirs: 30,
    maxDepth: 5,
    corpus: 256 * KiB,
    pycacheDirs: 4,
    buildDirs: 2,
    strayJunk: 10,
    distFiles: 5,
    nestedIgnores: 2,
    symlinks: 3,
    large: [2 * MiB, 1 * MiB],
  },
};

/** mulberry32: a small deterministic PRNG for the tree's shape. */
export function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  next.int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1));
  next.pick = (xs) => xs[Math.floor(next() * xs.length)];
  next.normal = () => {
    const u = Math.max(next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
  };
  return next;
}

/** Incompressible bytes from AES-128-CTR over zeros, keyed by `seed` (reproducible, GB/s fast). */
export class RandomStream {
  constructor(seed) {
    const key = crypto.createHash('sha256').update(`skysync-bench:${seed}`).digest();
    this.cipher = crypto.createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
    this.zeros = Buffer.alloc(0);
  }
  next(n) {
    if (this.zeros.length < n) this.zeros = Buffer.alloc(n);
    return this.cipher.update(this.zeros.subarray(0, n));
  }
}

export function randomBuffer(n, seed) {
  const out = Buffer.allocUnsafe(n);
  const rs = new RandomStream(seed);
  const step = 16 * MiB;
  for (let o = 0; o < n; o += step) rs.next(Math.min(step, n - o)).copy(out, o);
  return out;
}

export function writeRandomFile(file, size, seed) {
  const fd = fs.openSync(file, 'w');
  try {
    const rs = new RandomStream(seed);
    const step = 16 * MiB;
    for (let o = 0; o < size; o += step) {
      const b = rs.next(Math.min(step, size - o));
      let w = 0;
      while (w < b.length) w += fs.writeSync(fd, b, w, b.length - w, o + w);
    }
  } finally {
    fs.closeSync(fd);
  }
}

const WORDS = (
  'self data model config train loss batch value index result items tensor layer input output weight bias ' +
  'return import from def class const let function async await if else for while try except raise yield ' +
  'none true false print logger path file read write open close parse load save step epoch grad optim ' +
  'token embed hidden dropout norm scale shape dim size mask attention query key cache buffer stream node'
).split(' ');

function makeCorpus(size, rand) {
  const parts = [];
  let n = 0;
  let indent = 0;
  while (n < size) {
    const words = rand.int(2, 12);
    let line = '    '.repeat(indent);
    for (let i = 0; i < words; i++) {
      const w = rand.pick(WORDS);
      line += i === 0 ? w : rand() < 0.15 ? `(${w}_${rand.int(0, 99)})` : rand() < 0.1 ? ` = ${w}` : ` ${w}`;
    }
    if (rand() < 0.2) line += ':';
    line += '\n';
    if (rand() < 0.25) indent = Math.max(0, Math.min(4, indent + rand.int(-1, 1)));
    parts.push(line);
    n += line.length;
  }
  return Buffer.from(parts.join('')).subarray(0, size);
}

const DIR_WORDS = [
  'src',
  'lib',
  'pkg',
  'core',
  'utils',
  'models',
  'data',
  'tests',
  'scripts',
  'configs',
  'docs',
  'ops',
  'layers',
  'io',
  'api',
  'tools',
  'vendor',
  'nn',
  'eval',
  'train',
];
const STEMS = [
  'util',
  'model',
  'config',
  'train',
  'dataset',
  'test',
  'main',
  'helpers',
  'index',
  'layer',
  'loss',
  'optim',
  'sampler',
  'schema',
  'client',
  'server',
  'cache',
  'metrics',
  'readme',
  'notes',
];
const EXTS = ['py', 'py', 'py', 'ts', 'ts', 'js', 'json', 'md', 'txt', 'yaml', 'c', 'h', 'rs', 'sh', 'toml', 'cfg'];

const ROOT_GITIGNORE = `# Python
__pycache__/
*.py[cod]
# logs and scratch
*.log
*.tmp
# build outputs
/dist/
build/
.cache/
# but keep this one
!important.log
`;

const NESTED_GITIGNORE = `*.bak
scratch/
`;

/** Small text file sizes: log-normal around 1.5 KB (mean ~3 KB), a few empty, capped at 256 KiB. */
function textSize(rand) {
  if (rand() < 0.01) return 0;
  return Math.min(256 * KiB, Math.max(1, Math.floor(Math.exp(Math.log(1500) + 1.2 * rand.normal()))));
}

/**
 * Writes the tree under `root`. Returns counts: synced files (not ignored), ignored files, dirs, symlinks, bytes.
 */
export function generateTree(root, p, seed = 1) {
  const rand = prng(seed);
  const corpus = makeCorpus(p.corpus, rand);
  fs.mkdirSync(root, { recursive: true });
  const dirs = [{ rel: '', depth: 0, kids: 0 }];
  for (let i = 1; i < p.dirs; i++) {
    let parent;
    do parent = dirs[Math.floor(rand() * dirs.length)];
    while (parent.depth >= p.maxDepth);
    const name = `${rand.pick(DIR_WORDS)}${parent.kids++}`;
    const rel = parent.rel ? `${parent.rel}/${name}` : name;
    dirs.push({ rel, depth: parent.depth + 1, kids: 0 });
  }
  for (const d of dirs) if (d.rel) fs.mkdirSync(path.join(root, d.rel), { recursive: true });
  const counts = { synced: 0, ignored: 0, dirs: dirs.length, symlinks: 0, bytes: 0 };
  const writeText = (rel, size, synced) => {
    const header = Buffer.from(`# ${rel}\n`);
    const off = Math.floor(rand() * Math.max(1, corpus.length - size));
    const body = corpus.subarray(off, off + Math.max(0, size - header.length));
    fs.writeFileSync(path.join(root, rel), size === 0 ? '' : Buffer.concat([header, body]).subarray(0, size));
    if (synced) {
      counts.synced++;
      counts.bytes += size;
    } else counts.ignored++;
  };
  const writeBinaryJunk = (rel) => {
    const n = rand.int(200, 20 * KiB);
    fs.writeFileSync(path.join(root, rel), crypto.randomBytes(n));
    counts.ignored++;
  };

  // Ignore rules: the root's, and nested ones in a few directories.
  fs.writeFileSync(path.join(root, '.gitignore'), ROOT_GITIGNORE);
  counts.synced++;
  const nested = [];
  for (let i = 0; i < p.nestedIgnores; i++) {
    const d = dirs[1 + Math.floor(rand() * (dirs.length - 1))];
    if (nested.includes(d)) continue;
    nested.push(d);
    fs.writeFileSync(path.join(root, d.rel, '.gitignore'), NESTED_GITIGNORE);
    counts.synced++;
    for (let k = 0; k < 3; k++) writeText(`${d.rel}/old_${k}.bak`, textSize(rand), false);
    fs.mkdirSync(path.join(root, d.rel, 'scratch'), { recursive: true });
    for (let k = 0; k < 2; k++) writeText(`${d.rel}/scratch/tmp_${k}.txt`, textSize(rand), false);
  }

  // Ignored junk: __pycache__ dirs, build/ dirs, /dist/, stray logs and temp files.
  for (let i = 0; i < p.pycacheDirs; i++) {
    const d = dirs[Math.floor(rand() * dirs.length)];
    const pc = d.rel ? `${d.rel}/__pycache__` : '__pycache__';
    fs.mkdirSync(path.join(root, pc), { recursive: true });
    for (let k = rand.int(3, 8); k > 0; k--) writeBinaryJunk(`${pc}/${rand.pick(STEMS)}_${k}.cpython-311.pyc`);
  }
  for (let i = 0; i < p.buildDirs; i++) {
    const d = dirs[Math.floor(rand() * dirs.length)];
    const b = d.rel ? `${d.rel}/build/obj` : 'build/obj';
    fs.mkdirSync(path.join(root, b), { recursive: true });
    for (let k = rand.int(5, 20); k > 0; k--) writeBinaryJunk(`${b}/unit_${k}.o`);
  }
  fs.mkdirSync(path.join(root, 'dist'), { recursive: true });
  for (let k = 0; k < p.distFiles; k++) writeText(`dist/bundle_${k}.js`, textSize(rand), false);
  for (let i = 0; i < p.strayJunk; i++) {
    const d = dirs[Math.floor(rand() * dirs.length)];
    const rel = `${d.rel ? d.rel + '/' : ''}run_${i}.${rand() < 0.5 ? 'log' : 'tmp'}`;
    writeText(rel, textSize(rand), false);
  }

  // The synced files, spread over the directories; a few executables and kept logs.
  let i = 0;
  while (counts.synced < p.files) {
    const d = dirs[Math.floor(rand() * dirs.length)];
    const ext = rand.pick(EXTS);
    const name = counts.synced % 997 === 0 ? `important.log` : `${rand.pick(STEMS)}_${i++}.${ext}`;
    const rel = d.rel ? `${d.rel}/${name}` : name;
    if (fs.existsSync(path.join(root, rel))) continue;
    writeText(rel, textSize(rand), true);
    if (ext === 'sh') fs.chmodSync(path.join(root, rel), 0o755);
  }

  // Relative symlinks to sibling files.
  for (let k = 0; k < p.symlinks; k++) {
    const d = dirs[Math.floor(rand() * dirs.length)];
    const files = fs.readdirSync(path.join(root, d.rel), { withFileTypes: true }).filter((e) => e.isFile() && !/\.(log|tmp|bak)$/.test(e.name));
    if (!files.length) continue;
    const target = rand.pick(files).name;
    const link = path.join(root, d.rel, `link_${k}`);
    if (fs.existsSync(link)) continue;
    fs.symlinkSync(target, link);
    counts.symlinks++;
  }
  return counts;
}

function gitEnv() {
  return {
    ...process.env,
    GIT_AUTHOR_NAME: 'bench',
    GIT_AUTHOR_EMAIL: 'bench@example.invalid',
    GIT_COMMITTER_NAME: 'bench',
    GIT_COMMITTER_EMAIL: 'bench@example.invalid',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    // No background `gc --auto` that could land inside a measurement; generation packs once, synchronously.
    GIT_CONFIG_COUNT: '1',
    GIT_CONFIG_KEY_0: 'gc.auto',
    GIT_CONFIG_VALUE_0: '0',
  };
}

/** git with the repository kept outside the tree, so the tree stays exactly what skysync and find see. */
export function gitArgs(data, ...args) {
  return ['--git-dir', data.gitDir, '--work-tree', data.tree, ...args];
}

export function git(data, args, opts = {}) {
  return run('git', gitArgs(data, ...args), { env: gitEnv(), ...opts });
}

/**
 * Ensures the data set of `profile` exists: { root, tree, gitDir, large: [paths], counts }. The tree (small files)
 * and the large files live side by side: CACHE_ROOT/<profile>/tree and CACHE_ROOT/<profile>/large.
 */
export function ensureData(profile) {
  const p = PROFILES[profile];
  const root = path.join(CACHE_ROOT, profile);
  const marker = path.join(root, 'READY.json');
  const want = { version: GEN_VERSION, profile: p };
  const data = {
    root,
    tree: path.join(root, 'tree'),
    gitDir: path.join(root, 'tree.git'),
    largeDir: path.join(root, 'large'),
  };
  data.large = p.large.map((_, i) => path.join(data.largeDir, `ckpt-${i}.bin`));
  try {
    const have = JSON.parse(fs.readFileSync(marker, 'utf8'));
    const complete =
      JSON.stringify(have.want) === JSON.stringify(want) &&
      fs.existsSync(data.tree) &&
      fs.existsSync(data.gitDir) &&
      data.large.every((f, i) => fs.existsSync(f) && fs.statSync(f).size === p.large[i]);
    if (complete) return { ...data, counts: have.counts, generated: false };
  } catch {
    // not there or unreadable: regenerate
  }
  log(`generating the ${profile} data set under ${root} (once)`);
  rmrf(root);
  fs.mkdirSync(data.largeDir, { recursive: true });
  let t = nowMs();
  const counts = generateTree(data.tree, p);
  log(`  tree: ${counts.synced} synced files, ${counts.ignored} ignored, ${counts.dirs} dirs, ${counts.symlinks} symlinks in ${((nowMs() - t) / 1000).toFixed(1)} s`);
  t = nowMs();
  for (const [i, size] of p.large.entries()) writeRandomFile(data.large[i], size, `large-${i}`);
  log(`  large files: ${p.large.length} in ${((nowMs() - t) / 1000).toFixed(1)} s`);
  t = nowMs();
  git(data, ['init', '-q']);
  git(data, ['-c', 'core.looseCompression=1', '-c', 'core.compression=1', 'add', '-A']);
  git(data, ['commit', '-q', '-m', 'bench tree']);
  git(data, ['gc', '-q']);
  log(`  git init + add + commit in ${((nowMs() - t) / 1000).toFixed(1)} s`);
  fs.writeFileSync(marker, JSON.stringify({ want, counts, createdAt: new Date().toISOString() }, null, 2));
  return { ...data, counts, generated: true };
}

/** Inserts one byte at `pos`, shifting the rest of the file (a 1-byte insert in the middle of a large file). */
export function insertByte(file, pos, byte) {
  const size = fs.statSync(file).size;
  const tail = Buffer.allocUnsafe(size - pos);
  const fd = fs.openSync(file, 'r+');
  try {
    for (let o = 0; o < tail.length; ) o += fs.readSync(fd, tail, o, tail.length - o, pos + o);
    fs.writeSync(fd, Buffer.from([byte]), 0, 1, pos);
    for (let o = 0; o < tail.length; ) o += fs.writeSync(fd, tail, o, tail.length - o, pos + 1 + o);
  } finally {
    fs.closeSync(fd);
  }
}

/** Overwrites `len` bytes at `pos` with seeded random bytes. */
export function overwrite(file, pos, len, seed) {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, new RandomStream(seed).next(len), 0, len, pos);
  } finally {
    fs.closeSync(fd);
  }
}
