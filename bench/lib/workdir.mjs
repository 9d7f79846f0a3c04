// The workdir of the shaped-link benchmark (bench/shaped.mjs): real source text copied from what is installed
// on this machine, three large random binaries (one a "checkpoint"), and junk behind a root `.gitignore` that
// must never be synced. Generated once into CACHE_ROOT/shaped-<size>/tree with a READY.json marker; the
// benchmark works on a copy.
//
// Source text, in order of preference (npm first, as in the brief's baseline tree):
//   1. npm packages: this repo's node_modules/.pnpm, /usr/lib/node_modules, /usr/local/lib/node_modules -> vendor/js*
//      and this repo's own tracked source (packages/, native/, bench/, scripts/) -> src/
//   2. other installed source trees: Go's standard library, Rust crates from ~/.cargo, Python, /usr/include,
//      Perl, CMake modules, Vim runtime -> vendor/<name>/
// Only text files (no NUL in the first 8 KiB) of 1 B to 1 MiB, each content once (deduplicated by hash, so
// content-level deduplication cannot flatter a tool), picked deterministically: evenly spaced over the sorted
// candidates. Ignore files (.gitignore, .npmignore, ...) are not copied, so the root `.gitignore` alone decides.
// Where a machine has too little text, the rest is made of "vendored copies": earlier files with a one-line
// header naming the copy (the count is recorded).

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CACHE_ROOT, KiB, MiB, REPO, log, nowMs, rmrf } from './common.mjs';
import { RandomStream, prng, writeRandomFile } from './gen.mjs';

const GEN_VERSION = 1;

export const SIZES = {
  full: { textFiles: 35_200, binMiB: 200, pycacheDirs: 300, logs: 200, dataBinMiB: [64, 64], dataSmall: 1000 },
  smoke: { textFiles: 200, binMiB: 2, pycacheDirs: 5, logs: 5, dataBinMiB: [1], dataSmall: 10 },
};

/** A custom size for development: `files` text files, binaries of `binMiB`. */
export function customSize(files, binMiB) {
  return {
    textFiles: files,
    binMiB,
    pycacheDirs: Math.max(2, Math.round(files / 120)),
    logs: Math.max(2, Math.round(files / 180)),
    dataBinMiB: [Math.max(1, Math.round(binMiB / 3))],
    dataSmall: Math.max(5, Math.round(files / 35)),
  };
}

export const GITIGNORE = `# generated junk that must never be synced
__pycache__/
*.pyc
*.log
/data/
`;

/** The three binaries: the one a byte is inserted into, the one copied with a change, the checkpoint pulled back. */
export const BINARIES = { insert: 'assets/embeddings.bin', copyBase: 'assets/shard-000.bin', checkpoint: 'checkpoints/model.ckpt' };

/** Whether a path (relative, '/'-separated) is ignored by GITIGNORE. Used to build the expected remote tree. */
export function isIgnored(rel) {
  const parts = rel.split('/');
  if (parts[0] === 'data') return true;
  if (parts.slice(0, -1).includes('__pycache__')) return true;
  const base = parts[parts.length - 1];
  return base === '__pycache__' || base.endsWith('.log') || base.endsWith('.pyc');
}

const HOME = os.homedir();
const SOURCES = [
  // tier 1: npm
  { tier: 1, root: path.join(REPO, 'node_modules', '.pnpm'), to: 'vendor/js' },
  { tier: 1, root: '/usr/lib/node_modules', to: 'vendor/js-global' },
  { tier: 1, root: '/usr/local/lib/node_modules', to: 'vendor/js-local' },
  { tier: 1, root: REPO, to: 'src', git: ['packages', 'native/core', 'native/binding', 'bench', 'scripts'] },
  // tier 2: other source trees
  { tier: 2, root: '/usr/local/go/src', to: 'vendor/go' },
  { tier: 2, root: path.join(HOME, '.cargo', 'registry', 'src'), to: 'vendor/rust' },
  { tier: 2, root: '/usr/lib/python3/dist-packages', to: 'vendor/python/dist-packages' },
  { tier: 2, root: '/usr/lib/python3.11', to: 'vendor/python/stdlib' },
  { tier: 2, root: '/usr/include', to: 'vendor/include' },
  { tier: 2, root: '/usr/share/perl', to: 'vendor/perl/share' },
  { tier: 2, root: '/usr/share/perl5', to: 'vendor/perl/share5' },
  { tier: 2, root: '/usr/lib/x86_64-linux-gnu/perl-base', to: 'vendor/perl/base' },
  { tier: 2, root: '/usr/share/cmake-3.25', to: 'vendor/cmake' },
  { tier: 2, root: '/usr/share/vim', to: 'vendor/vim' },
];

const SKIP_NAMES = new Set(['.gitignore', '.npmignore', '.skyignore', '.gitattributes', '.gitmodules', '.git', '.DS_Store', '__pycache__', 'node_modules_cache']);
const SKIP_EXT = /\.(pyc|pyo|log|o|a|so|node|wasm|gz|xz|bz2|zst|zip|tgz|png|jpg|jpeg|gif|ico|woff2?|ttf|otf|pdf|exe|dll|dylib|rlib|rmeta|class|jar)$/i;
const SAFE_SEGMENT = /^[A-Za-z0-9_.@+=,-]+$/;

/** Lists candidate regular files under a source (no symlinks followed): [{ abs, rel }] with rel mapped into the tree. */
function candidates(src) {
  const out = [];
  if (!fs.existsSync(src.root)) return out;
  const add = (abs, relInSrc) => {
    const segs = relInSrc.split('/').map((s) => (s === 'node_modules' ? 'nm' : s));
    if (!segs.every((s) => SAFE_SEGMENT.test(s) && !SKIP_NAMES.has(s) && s !== '.' && s !== '..')) return;
    const base = segs[segs.length - 1];
    if (SKIP_EXT.test(base)) return;
    const rel = `${src.to}/${segs.join('/')}`;
    if (isIgnored(rel)) return;
    out.push({ abs, rel });
  };
  if (src.git) {
    const r = spawnSync('git', ['-C', src.root, 'ls-files', '-z', '--', ...src.git], { encoding: 'utf8' });
    if (r.status !== 0) return out;
    for (const rel of r.stdout.split('\0').filter(Boolean)) {
      const abs = path.join(src.root, rel);
      let st;
      try {
        st = fs.lstatSync(abs);
      } catch {
        continue;
      }
      if (st.isFile() && st.size > 0 && st.size <= MiB) add(abs, rel);
    }
    return out;
  }
  const walk = (dir, relDir) => {
    let ents;
    try {
      ents = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of ents) {
      if (SKIP_NAMES.has(e.name)) continue;
      const abs = path.join(dir, e.name);
      const rel = relDir ? `${relDir}/${e.name}` : e.name;
      if (e.isDirectory()) walk(abs, rel);
      else if (e.isFile()) {
        let st;
        try {
          st = fs.statSync(abs);
        } catch {
          continue;
        }
        if (st.size > 0 && st.size <= MiB) add(abs, rel);
      }
    }
  };
  walk(src.root, '');
  return out;
}

/** Reads a candidate; null when it is not text, unreadable, or a content already taken. */
function accept(c, seen) {
  let buf;
  try {
    buf = fs.readFileSync(c.abs);
  } catch {
    return null;
  }
  if (buf.subarray(0, 8 * KiB).includes(0)) return null;
  const h = crypto.createHash('sha1').update(buf).digest('hex');
  if (seen.has(h)) return null;
  seen.add(h);
  let exec = false;
  try {
    exec = (fs.statSync(c.abs).mode & 0o111) !== 0;
  } catch {
    /* ignore */
  }
  return { rel: c.rel, buf, exec };
}

const byRel = (a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0);

/** Picks `want` accepted files from sorted candidates, evenly spaced, skipping rejects to the next one. */
function pickEvenly(cands, want, seen, taken) {
  const out = [];
  if (want <= 0 || cands.length === 0) return out;
  const used = new Uint8Array(cands.length);
  const step = cands.length / want;
  for (let j = 0; j < want; j++) {
    let i = Math.floor(j * step);
    let got = null;
    for (let tries = 0; tries < cands.length && !got; tries++, i = (i + 1) % cands.length) {
      if (used[i] || taken.has(cands[i].rel)) continue;
      used[i] = 1;
      got = accept(cands[i], seen);
    }
    if (!got) break;
    taken.add(got.rel);
    out.push(got);
  }
  return out;
}

/** Chooses the text files: tier 1 first (all of it, or an even sample), then tier 2, then vendored copies. */
function selectTexts(want) {
  const seen = new Set();
  const taken = new Set();
  const sources = {};
  const tiers = [1, 2].map((t) => {
    const c = SOURCES.filter((s) => s.tier === t).flatMap((s) => {
      const list = candidates(s);
      sources[s.to] = { root: s.root, candidates: list.length, taken: 0 };
      return list;
    });
    // One path can come from two sources in theory; keep the first.
    const uniq = [];
    const paths = new Set();
    for (const x of c.sort(byRel)) {
      if (paths.has(x.rel)) continue;
      paths.add(x.rel);
      uniq.push(x);
    }
    return uniq;
  });
  let picked = pickEvenly(tiers[0], Math.min(want, tiers[0].length), seen, taken);
  picked = picked.concat(pickEvenly(tiers[1], want - picked.length, seen, taken));
  const real = picked.length;
  for (const p of picked) {
    const src = Object.keys(sources).find((k) => p.rel.startsWith(`${k}/`));
    if (src) sources[src].taken++;
  }
  // Not enough text on this machine: vendored copies, each with its own first line.
  let k = 2;
  while (picked.length < want && real > 0) {
    for (let i = 0; i < real && picked.length < want; i++) {
      const p = picked[i];
      const header = Buffer.from(`/* vendored copy v${k} of ${p.rel} */\n`);
      picked.push({ rel: `vendor/copies/v${k}/${p.rel}`, buf: Buffer.concat([header, p.buf]), exec: p.exec });
    }
    k++;
  }
  if (picked.length < want) throw new Error(`found no source text to build the workdir from (looked in ${SOURCES.map((s) => s.root).join(', ')})`);
  return { picked: picked.sort(byRel), sources, realFiles: real, copies: picked.length - real };
}

function writeFile(root, rel, buf, mode = 0o644) {
  const abs = path.join(root, rel);
  fs.mkdirSync(path.dirname(abs), { recursive: true });
  fs.writeFileSync(abs, buf, { mode });
  fs.chmodSync(abs, mode);
}

/** Every regular file under `root` (relative paths, sorted), not following symlinks. */
export function listFiles(root) {
  const out = [];
  const walk = (dir, rel) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path.join(dir, e.name), r);
      else out.push(r);
    }
  };
  walk(root, '');
  return out.sort();
}

/**
 * Bytes of the synced tree after deduplication (each distinct content once) and compression (one zstd -3 stream
 * over them, in path order), the floor any tool must move on an initial push. Null if zstd is missing.
 */
function floorBytes(root, rels) {
  const seen = new Set();
  const list = [];
  for (const rel of rels) {
    const abs = path.join(root, rel);
    const st = fs.statSync(abs);
    // Content identity without reading twice: big files by a hash of their head and size, small by full hash.
    const buf = st.size <= 4 * MiB ? fs.readFileSync(abs) : null;
    const id = buf ? crypto.createHash('sha1').update(buf).digest('hex') : `big:${st.size}:${rel}`;
    if (seen.has(id)) continue;
    seen.add(id);
    list.push(abs);
  }
  const listFile = path.join(root, '..', 'floor-list.bin');
  fs.writeFileSync(listFile, list.join('\0') + '\0');
  const r = spawnSync('sh', ['-c', 'xargs -0 cat -- < "$1" | zstd -3 -q -c | wc -c', 'sh', listFile], { encoding: 'utf8', maxBuffer: 16 * MiB });
  fs.rmSync(listFile, { force: true });
  if (r.status !== 0 || !/^\d+/.test(r.stdout.trim())) return null;
  return { bytes: Number(r.stdout.trim()), distinctFiles: list.length, method: 'distinct contents, one `zstd -3` stream' };
}

/**
 * Ensures the workdir of size `name` (full, smoke, or custom-<files>f-<mib>m with `spec`) exists; returns
 * { root, tree, name, counts, floor, binaries: {insert, copyBase, checkpoint} (relative), generated }.
 */
export function ensureWorkdir(name, spec = SIZES[name]) {
  if (!spec) throw new Error(`unknown workdir size ${name}`);
  const root = path.join(CACHE_ROOT, `shaped-${name}`);
  const tree = path.join(root, 'tree');
  const marker = path.join(root, 'READY.json');
  const want = { version: GEN_VERSION, spec };
  try {
    const have = JSON.parse(fs.readFileSync(marker, 'utf8'));
    if (JSON.stringify(have.want) === JSON.stringify(want) && fs.existsSync(path.join(tree, BINARIES.checkpoint))) {
      return { root, tree, name, ...have, binaries: BINARIES, generated: false };
    }
  } catch {
    /* regenerate */
  }
  log(`generating the shaped-link workdir "${name}" under ${root} (once)`);
  rmrf(root);
  fs.mkdirSync(tree, { recursive: true });
  const t0 = nowMs();

  // Source text.
  const sel = selectTexts(spec.textFiles);
  for (const p of sel.picked) writeFile(tree, p.rel, p.buf, p.exec ? 0o755 : 0o644);
  writeFile(tree, '.gitignore', Buffer.from(GITIGNORE));
  log(`  ${sel.picked.length} text files (${sel.realFiles} distinct real files, ${sel.copies} vendored copies) in ${((nowMs() - t0) / 1000).toFixed(1)} s`);

  // Binaries.
  const t1 = nowMs();
  for (const [k, rel] of Object.entries(BINARIES)) {
    fs.mkdirSync(path.dirname(path.join(tree, rel)), { recursive: true });
    writeRandomFile(path.join(tree, rel), spec.binMiB * MiB, `shaped-${k}`);
  }
  log(`  ${Object.keys(BINARIES).length} binaries of ${spec.binMiB} MiB in ${((nowMs() - t1) / 1000).toFixed(1)} s`);

  // Ignored junk: __pycache__ next to Python files, logs scattered in existing directories, a big data/.
  const rand = prng(4242);
  const dirs = [...new Set(sel.picked.map((p) => path.posix.dirname(p.rel)))].sort();
  const pyDirs = [...new Set(sel.picked.filter((p) => p.rel.endsWith('.py')).map((p) => path.posix.dirname(p.rel)))].sort();
  const pool = pyDirs.length >= spec.pycacheDirs ? pyDirs : dirs;
  let _ignoredFiles = 0;
  let ignoredBytes = 0;
  const junk = (rel, buf) => {
    writeFile(tree, rel, buf);
    _ignoredFiles++;
    ignoredBytes += buf.length;
  };
  const rs = new RandomStream('shaped-junk');
  for (let i = 0; i < spec.pycacheDirs; i++) {
    const d = pool[Math.floor((i * pool.length) / spec.pycacheDirs)];
    for (let k = rand.int(1, 5); k > 0; k--) junk(`${d}/__pycache__/mod_${i}_${k}.cpython-311.pyc`, rs.next(rand.int(1 * KiB, 30 * KiB)));
  }
  const logLine = (i) => `step ${i} loss ${(2 / (1 + i / 100)).toFixed(4)} lr 3e-4 tokens/s ${1000 + (i % 97)}\n`;
  for (let i = 0; i < spec.logs; i++) {
    const d = dirs[Math.floor((i * dirs.length) / spec.logs)];
    const lines = rand.int(50, 1000);
    let s = '';
    for (let j = 0; j < lines; j++) s += logLine(j);
    junk(`${d}/train-${i}.log`, Buffer.from(s));
  }
  spec.dataBinMiB.forEach((mib, i) => {
    const rel = `data/raw/shard-${i}.bin`;
    fs.mkdirSync(path.join(tree, 'data/raw'), { recursive: true });
    writeRandomFile(path.join(tree, rel), mib * MiB, `shaped-data-${i}`);
    _ignoredFiles++;
    ignoredBytes += mib * MiB;
  });
  for (let i = 0; i < spec.dataSmall; i++) junk(`data/cache/item-${String(i).padStart(5, '0')}.npy`, rs.next(rand.int(512, 8 * KiB)));
  junk('run.log', Buffer.from(logLine(0)));

  // What is synced, and the floor.
  const all = listFiles(tree);
  const synced = all.filter((r) => !isIgnored(r));
  let syncedBytes = 0;
  for (const r of synced) syncedBytes += fs.statSync(path.join(tree, r)).size;
  const t2 = nowMs();
  const floor = floorBytes(tree, synced);
  log(`  floor (deduplicated, zstd -3): ${floor ? `${(floor.bytes / MiB).toFixed(1)} MiB` : 'n/a (no zstd)'} in ${((nowMs() - t2) / 1000).toFixed(1)} s`);
  const counts = {
    files: all.length,
    syncedFiles: synced.length,
    syncedBytes,
    ignoredFiles: all.length - synced.length,
    ignoredBytes,
    textFiles: sel.picked.length,
    realTextFiles: sel.realFiles,
    vendoredCopies: sel.copies,
    binaries: Object.keys(BINARIES).length,
  };
  const info = { want, counts, floor, sources: sel.sources, gitignore: GITIGNORE, createdAt: new Date().toISOString() };
  fs.writeFileSync(marker, JSON.stringify(info, null, 2) + '\n');
  log(
    `  workdir ready: ${counts.syncedFiles} synced files (${(syncedBytes / MiB).toFixed(0)} MiB), ${counts.ignoredFiles} ignored (${(ignoredBytes / MiB).toFixed(0)} MiB) in ${((nowMs() - t0) / 1000).toFixed(1)} s`,
  );
  return { root, tree, name, ...info, binaries: BINARIES, generated: true };
}
