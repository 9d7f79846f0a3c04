#!/usr/bin/env node
// skysync against rsync over SSH on a shaped link (issue 6): the same workdir, the same run, alternating order.
//
// Usage (as root: it creates a network namespace, users and an sshd):
//   node bench/shaped.mjs                      full size (~35k files, 3 x 200 MiB binaries), 100 Mbit/s, 20 ms RTT
//   node bench/shaped.mjs --smoke              ~200 files and 3 x 2 MiB binaries, 1 repetition (a minute or two)
//   --loopback                                 no namespace, shaping or delay: sshd on 127.0.0.1 (wire bytes from `lo`,
//                                              approximate); for machines without netns, and for the tests
//   --rate 100mbit --rtt 20                    the link: tbf rate each way, round-trip delay added by the proxy (ms)
//   --reps N                                   repetitions per scenario and page-cache state (default 3, smoke 1)
//   --only=noop,edit                           only the scenarios whose names start with these (dests are synced
//                                              untimed first where a scenario needs it)
//   --keep                                     keep the run directory and the remote homes (for inspection; then
//                                              `node bench/rig/rig.mjs down --wipe` and rm -rf the run directory)
//   --files N --bin-mib M                      a custom workdir size, for development (results go to
//                                              /tmp/skysync-bench/results, not bench/results)
//   --verify=each|end                          check every destination against the source after each scenario
//                                              (smoke default) or only after the initial push and at the end
//
// The rig alone, for manual use: `node bench/rig/rig.mjs up [--rate 100mbit] [--rtt 20] [--loopback]`, then
// `ssh -F /tmp/skysync-bench/rig/ssh_config bench`, and `node bench/rig/rig.mjs down [--wipe]`.
//
// Scenarios (each from a synced state, every tool on its own destination; the workdir is a copy of the cached one;
// skysync's watch service has answered one untimed push first, as for a user who pushes many times an hour):
//   initial       initial push to an empty destination (fresh node: no agent, no state)
//   noop          no-op re-push
//   edit          one source file edited
//   insert        1 byte inserted in the middle of a large binary
//   touch         1000 files touched (mtime only), 50 of them edited
//   copy          a new large file = copy of another with 1 MiB changed
//   rename        a directory of many files renamed
//   pull          a changed checkpoint pulled back (skysync pull vs rsync -az host:... local)
//   fanout        initial push to 4 nodes: `skysync push bench` (head + bench-worker1..3) vs 4 parallel rsyncs
//
// Tools: skysync cold CLI (SKYSYNC_CONTROL_PERSIST=0), skysync warm (default environment), SkyPilot's
// `rsync -Pavz --no-owner --no-group --delete --filter=':- .gitignore'` and the same with --no-inc-recursive.
// Each measurement: wall time of the command, bytes on the wire (client veth counters, both directions), client
// CPU (the command and all its descendants, from this process's children times), server CPU (the sshd's cgroup).
// Page cache: "cold" drops it (sync; echo 3 > /proc/sys/vm/drop_caches) before each command, "warm" does not.
//
// Prints a markdown table on stdout (progress on stderr), writes bench/results/shaped.json and shaped.svg
// (shaped-smoke.* with --smoke). Exits non-zero when a step fails (not when a target is missed); 75 when the
// rig is in use by another run.

import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  CACHE_ROOT,
  CLI_BIN,
  KiB,
  MiB,
  RESULTS_DIR,
  buildChanged,
  buildInfo,
  childEnv,
  fmtBytes,
  fmtMs,
  log,
  machineInfo,
  median,
  nowMs,
  removeLeftovers,
  rmrf,
  rmrfInBackground,
  run,
  table,
  waitForQuiet,
  watchInterference,
} from './lib/common.mjs';
import { RandomStream, insertByte, overwrite } from './lib/gen.mjs';
import { BINARIES, SIZES, customSize, ensureWorkdir, isIgnored, listFiles } from './lib/workdir.mjs';
import { CLUSTER, RigBusyError, parseRate, rigSkipReason, up as rigUp } from './rig/rig.mjs';

// ---- flags ----

function parseFlags(argv) {
  const f = { smoke: false, loopback: false, rate: '100mbit', rtt: 20, reps: null, only: null, keep: false, files: null, binMiB: null, verify: null, help: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const k = eq > 0 ? a.slice(0, eq) : a;
    const v = () => {
      const x = eq > 0 ? a.slice(eq + 1) : argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === '--smoke') f.smoke = true;
    else if (k === '--loopback') f.loopback = true;
    else if (k === '--keep') f.keep = true;
    else if (k === '--rate') f.rate = v();
    else if (k === '--rtt') f.rtt = Number(v());
    else if (k === '--reps') f.reps = Number(v());
    else if (k === '--only') f.only = v().split(',').filter(Boolean);
    else if (k === '--files') f.files = Number(v());
    else if (k === '--bin-mib') f.binMiB = Number(v());
    else if (k === '--verify') f.verify = v();
    else if (k === '-h' || k === '--help') f.help = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (f.reps !== null && !(Number.isInteger(f.reps) && f.reps >= 1)) throw new Error('--reps must be a positive integer');
  if (!(f.rtt >= 0)) throw new Error('--rtt must be >= 0');
  if (f.verify && !['each', 'end'].includes(f.verify)) throw new Error('--verify is each or end');
  parseRate(f.rate);
  return f;
}

let flags;
try {
  flags = parseFlags(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`${e.message}\n`);
  process.exit(2);
}
if (flags.help) {
  const lines = fs
    .readFileSync(new URL(import.meta.url), 'utf8')
    .split('\n')
    .slice(1);
  const head = lines
    .slice(
      0,
      lines.findIndex((l) => !l.startsWith('//')),
    )
    .map((l) => l.slice(3));
  process.stdout.write(head.join('\n') + '\n');
  process.exit(0);
}
const skip = rigSkipReason({ loopback: flags.loopback });
if (skip) {
  process.stderr.write(`bench/shaped.mjs: ${skip}\n`);
  process.exit(1);
}

const custom = flags.files !== null || flags.binMiB !== null;
const sizeName = flags.smoke ? 'smoke' : custom ? `custom-${flags.files ?? 2000}f-${flags.binMiB ?? 16}m` : 'full';
const sizeSpec = flags.smoke ? SIZES.smoke : custom ? customSize(flags.files ?? 2000, flags.binMiB ?? 16) : SIZES.full;
const REPS = flags.reps ?? (flags.smoke ? 1 : 3);
const VERIFY = flags.verify ?? (flags.smoke || custom ? 'each' : 'end');
// Another link than the targets' (100mbit, 20 ms) or loopback gets its own files, beside the main results.
const linkName = flags.smoke ? '' : flags.loopback ? '.loopback' : flags.rate !== '100mbit' || flags.rtt !== 20 ? `.link-${flags.rate}-${flags.rtt}ms` : '';
const resultName = `shaped${flags.smoke ? '-smoke' : custom ? '-custom' : ''}${linkName}${flags.only ? `.only-${flags.only.join('-')}` : ''}`;
const BIN = sizeSpec.binMiB * MiB;
const CHANGE = Math.min(MiB, BIN / 16); // the copy scenario's changed region
const PULL_REGIONS = 16;
const PULL_REGION = Math.min(MiB, BIN / 64); // the pull scenario: 16 regions of this size changed
const HEAD_TIMEOUT = 3_600_000;

const TARGETS = {
  noop: { warm: 10, cold: 5, wire: 2000 },
  edit: 8,
  touch: 5,
  insert: { speedup: 5, wire: 100_000 },
  copy: { speedup: 5, wire: 3_000_000 },
  initial: { ratio: 0.9, floorSlack: 1.1 },
  fanout: 0.5,
};

// ---- the rig, and cleaning up whatever happens ----

let rig = null;
let cleaned = false;
function cleanup(reason) {
  if (cleaned) return;
  cleaned = true;
  if (rig) {
    try {
      if (reason) log(`tearing the rig down (${reason})`);
      rig.down({ log });
    } catch (e) {
      process.stderr.write(`teardown failed: ${e.message}\n`);
    }
  }
}
process.on('exit', () => cleanup());
for (const [sig, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
  ['SIGHUP', 129],
]) {
  process.on(sig, () => {
    cleanup(sig);
    process.exit(code);
  });
}
process.on('uncaughtException', (e) => {
  process.stderr.write(`${e.stack ?? e}\n`);
  cleanup('uncaught exception');
  process.exit(1);
});

const results = {
  name: resultName,
  smoke: flags.smoke,
  size: sizeName,
  machine: machineInfo(),
  commit: null,
  rate: flags.loopback ? null : flags.rate,
  rttMs: flags.loopback ? null : flags.rtt,
  loopback: flags.loopback,
  reps: REPS,
  targets: TARGETS,
  rig: null,
  workdir: null,
  pageCache: null,
  tools: null,
  scenarios: {},
  verify: [],
  cpuBusyBefore: {},
  otherCpuDuring: {},
  failures: [],
  notes: [],
};
results.commit = results.machine.build.head;

// ---- the rig first (it may be in use by another run), then the data ----

try {
  rig = await rigUp({ rate: flags.rate, rttMs: flags.rtt, loopback: flags.loopback, nodes: 4, log });
} catch (e) {
  process.stderr.write(`${e.message}\n`);
  process.exit(e instanceof RigBusyError ? 75 : 1);
}
results.rig = rig.info;
log(`rig up: ${rig.info.mode}${flags.loopback ? '' : `, ${flags.rate} each way, ${flags.rtt} ms RTT`}; \`ssh true\` ${fmtMs(rig.info.sshTrueMs)}`);
// A single-node cluster for every scenario but the fan-out (`bench` alone), the 4-node cluster for the fan-out.
const CFG1 = rig.sshConfigHead;
const CFG4 = rig.sshConfig;
const HEAD = rig.nodes[0];

const wd = ensureWorkdir(sizeName, sizeSpec);
results.workdir = { name: sizeName, cacheDir: wd.root, counts: wd.counts, floor: wd.floor, sources: wd.sources, gitignore: wd.gitignore };
const runRoot = path.join(CACHE_ROOT, `shaped-run-${sizeName}`);
removeLeftovers(runRoot);
fs.mkdirSync(runRoot, { recursive: true });
const SRC = path.join(runRoot, 'src');
log(`copying the workdir to ${SRC}`);
run('cp', ['-a', '--reflink=auto', wd.tree, SRC], { timeoutMs: HEAD_TIMEOUT });

// ---- page cache ----

let coldOk = false;
try {
  run('sync', []);
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
  coldOk = true;
} catch (e) {
  results.notes.push(`cannot drop the page cache (${e.message.split('\n')[0]}): warm only`);
}
results.pageCache = coldOk ? 'cold and warm' : 'warm only';
const MODES = coldOk ? ['cold', 'warm'] : ['warm'];
const FIRST_MODE = MODES[0];
function dropCaches() {
  spawnSync('sync');
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

// ---- tools ----

const TOOLS = {
  sky: { label: 'skysync (cold CLI)', kind: 'sky', env: { SKYSYNC_CONTROL_PERSIST: '0' }, destDir: 'sky_workdir', dest: null, state: 'sky' },
  skyw: { label: 'skysync (warm)', kind: 'sky', env: {}, destDir: 'sky_workdir_warm', dest: '~/sky_workdir_warm', state: 'skyw' },
  rsync: { label: 'rsync -az', kind: 'rsync', extra: [], destDir: 'rsync_workdir' },
  rnir: { label: 'rsync -az --no-inc-recursive', kind: 'rsync', extra: ['--no-inc-recursive'], destDir: 'rsync_nir_workdir' },
};
const RSYNC_FLAGS = ['-Pavz', '--no-owner', '--no-group', '--delete', '--filter=:- .gitignore'];
results.tools = Object.fromEntries(
  Object.entries(TOOLS).map(([k, t]) => [
    k,
    t.kind === 'sky'
      ? `${t.env.SKYSYNC_CONTROL_PERSIST ? 'SKYSYNC_CONTROL_PERSIST=0 ' : ''}node packages/cli/dist/bin.js -F CFG push bench -w SRC${t.dest ? ` --dest '${t.dest}'` : ''} --json`
      : `rsync ${RSYNC_FLAGS.map((x) => (x.includes(' ') ? `'${x}'` : x)).join(' ')}${t.extra.length ? ` ${t.extra.join(' ')}` : ''} --stats -e 'ssh -F CFG' SRC/ bench:~/${t.destDir}/`,
  ]),
);

const baseEnv = childEnv();
delete baseEnv.SKYSYNC_CONTROL_PERSIST;
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

function childrenCpuMs() {
  const s = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[13]) + Number(f[14])) * 1000) / CLK_TCK;
}

/** Ctrl-C reaches the child first (same process group): stop here rather than carry on with the next step. */
function interrupted(sig) {
  if (sig === 'SIGINT' || sig === 'SIGHUP') {
    cleanup(`child ended by ${sig}`);
    process.exit(130);
  }
}
/** Lets signal handlers run between synchronous steps. */
const tick = () => new Promise((r) => setImmediate(r));

const settle = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);

/**
 * CPU ticks of client-side background processes started with the rig's ssh config (skysync's warm-connection
 * process): they are not children we wait for, so their time is not in childrenCpuMs. pid -> ticks.
 */
function daemonTicks() {
  const out = new Map();
  const skipPids = new Set([process.pid, ...Object.values(rig.state.pids ?? {})]);
  for (const n of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(n) || skipPids.has(Number(n))) continue;
    try {
      const cl = fs.readFileSync(`/proc/${n}/cmdline`, 'utf8');
      if (!cl.includes(rig.state.dir)) continue;
      const st = fs.readFileSync(`/proc/${n}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      if (f[0] === 'Z') continue;
      // Only processes of our own (root), not sessions of the bench users.
      if (!/^Uid:\s+0\s/m.test(fs.readFileSync(`/proc/${n}/status`, 'utf8'))) continue;
      out.set(Number(n), { ticks: Number(f[11]) + Number(f[12]), cmdline: cl });
    } catch {
      /* gone */
    }
  }
  return out;
}

function probe() {
  return { wire: rig.counters(), cpu: rig.cpu(), child: childrenCpuMs(), daemons: daemonTicks() };
}

/** CPU of the background processes whose command line names `owner` (a skysync state directory). */
function daemonCpuMs(a, b, owner) {
  if (!owner) return 0;
  let ticks = 0;
  for (const [pid, d] of b) if (d.cmdline.includes(owner)) ticks += d.ticks - (a.get(pid)?.ticks ?? 0);
  return (ticks * 1000) / CLK_TCK;
}

// On `lo` every byte is counted once sent and once received: count it once.
const ON_LO = rig.iface === 'lo';
function delta(a, b, ms, owner = null) {
  const daemon = daemonCpuMs(a.daemons, b.daemons, owner);
  return {
    ms,
    wireTx: b.wire.tx - a.wire.tx,
    wireRx: b.wire.rx - a.wire.rx,
    wire: ON_LO ? b.wire.tx - a.wire.tx : b.wire.tx - a.wire.tx + (b.wire.rx - a.wire.rx),
    clientCpuMs: b.child - a.child + daemon,
    daemonCpuMs: daemon,
    serverCpuMs: a.cpu.server === null || b.cpu.server === null ? null : (b.cpu.server - a.cpu.server) / 1000,
    proxyCpuMs: a.cpu.proxy === null || b.cpu.proxy === null ? null : (b.cpu.proxy - a.cpu.proxy) / 1000,
  };
}

/** Runs one command and measures it (wall time, wire bytes, client and server CPU). */
function measured(cmd, args, env, timeoutMs = HEAD_TIMEOUT) {
  const owner = env.SKYSYNC_STATE_DIR ?? null;
  const a = probe();
  const r = run(cmd, args, { env, timeoutMs, allowFail: true });
  interrupted(r.signal);
  if (r.status !== 0) throw new Error(`${path.basename(cmd)} ${args.slice(0, 8).join(' ')} ... failed (${r.signal ?? `exit ${r.status}`})\n${String(r.stderr).slice(-3000)}`);
  settle(); // the last ACKs, the session's exit on the server
  return { ...delta(a, probe(), r.ms, owner), stdout: r.stdout, stderr: r.stderr };
}

function parseSkyJson(out, what) {
  const lines = out.trim().split('\n');
  let stats;
  try {
    stats = JSON.parse(lines[lines.length - 1]);
  } catch {
    throw new Error(`${what}: no JSON on stdout: ${out.slice(-500)}`);
  }
  // One object; with several nodes, `nodes: [{ node, workdir: {...}, error }]` too.
  const parts = [stats, ...(Array.isArray(stats?.nodes) ? stats.nodes.flatMap((n) => [n, n?.workdir]) : [])];
  const failed = parts.flatMap((s) => s?.failed ?? []);
  const errors = parts.map((s) => s?.error).filter(Boolean);
  if (failed.length || errors.length) throw new Error(`${what} reported failures: ${JSON.stringify([...errors, ...failed]).slice(0, 1000)}`);
  return stats;
}

function parseRsyncStats(out) {
  const num = (label) => {
    const m = new RegExp(`^${label}: ([\\d,]+)`, 'm').exec(out);
    return m ? Number(m[1].replace(/,/g, '')) : null;
  };
  return {
    files: num('Number of files'),
    transferred: num('Number of regular files transferred'),
    literal: num('Literal data'),
    matched: num('Matched data'),
    sent: num('Total bytes sent'),
    received: num('Total bytes received'),
  };
}

function skyArgs(_t, sub, cfg = CFG1) {
  return [CLI_BIN, '-F', cfg, ...sub];
}
// skysync's state (and its warm-connection socket, which must fit a Unix socket path) per variant; per run.
const STATE_ROOT = path.join(CACHE_ROOT, 'shaped-state');
rmrf(STATE_ROOT);
const stateDir = (t) => path.join(STATE_ROOT, t.state);
function skyEnv(t) {
  return { ...baseEnv, SKYSYNC_STATE_DIR: stateDir(t), ...t.env };
}

/** A push by tool `k` to the single-node cluster `bench` (with cfg = CFG4, skysync's `bench` is all 4 nodes). */
function push(k, cfg = CFG1) {
  const t = TOOLS[k];
  if (t.kind === 'sky') {
    const m = measured(process.execPath, skyArgs(t, ['push', CLUSTER, '-w', SRC, ...(t.dest ? ['--dest', t.dest] : []), '--json'], cfg), skyEnv(t));
    const stats = parseSkyJson(m.stdout, `${t.label} push`);
    return { ...strip(m), stats };
  }
  const m = measured('rsync', [...RSYNC_FLAGS, ...t.extra, '--stats', '-e', `ssh -F ${cfg}`, `${SRC}/`, `${CLUSTER}:~/${t.destDir}/`], baseEnv);
  return { ...strip(m), stats: parseRsyncStats(m.stdout) };
}

function strip(m) {
  const { stdout, stderr, ...rest } = m;
  return rest;
}

const destOf = (k, node = HEAD) => path.join(node.home, TOOLS[k].destDir);

// ---- verification: every destination must equal the source minus the ignored files ----

const hashCache = new Map();
function hashFile(abs) {
  const h = crypto.createHash('sha1');
  const fd = fs.openSync(abs, 'r');
  try {
    const buf = Buffer.allocUnsafe(8 * MiB);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

function expectedTree() {
  const m = new Map();
  for (const rel of listFiles(SRC)) {
    if (isIgnored(rel)) continue;
    const abs = path.join(SRC, rel);
    const st = fs.lstatSync(abs);
    const key = `${rel}\0${st.size}\0${st.mtimeMs}\0${st.ino}`;
    let h = hashCache.get(key);
    if (!h) {
      h = st.isSymbolicLink() ? `link:${fs.readlinkSync(abs)}` : hashFile(abs);
      hashCache.set(key, h);
    }
    m.set(rel, h);
  }
  return m;
}

function verifyDir(label, dir, expected) {
  if (!fs.existsSync(dir)) throw new Error(`verify ${label}: ${dir} does not exist`);
  const have = listFiles(dir);
  const haveSet = new Set(have);
  const missing = [...expected.keys()].filter((r) => !haveSet.has(r));
  const extra = have.filter((r) => !expected.has(r));
  const differ = have.filter((r) => {
    if (!expected.has(r)) return false;
    const abs = path.join(dir, r);
    const st = fs.lstatSync(abs);
    return (st.isSymbolicLink() ? `link:${fs.readlinkSync(abs)}` : hashFile(abs)) !== expected.get(r);
  });
  const ignoredPresent = extra.filter(isIgnored);
  const ok = !missing.length && !extra.length && !differ.length;
  const rec = {
    label,
    dir,
    files: have.length,
    expected: expected.size,
    missing: missing.length,
    extra: extra.length,
    differ: differ.length,
    ignoredPresent: ignoredPresent.length,
    ok,
  };
  results.verify.push(rec);
  if (!ok) {
    const ex = (xs) => xs.slice(0, 3).join(', ');
    throw new Error(
      `verify ${label} (${dir}): ${missing.length} missing [${ex(missing)}], ${extra.length} extra [${ex(extra)}] (${ignoredPresent.length} of them ignored files), ${differ.length} differ [${ex(differ)}]`,
    );
  }
  return rec;
}

function verifyTools(keys, nodes = [HEAD]) {
  const exp = expectedTree();
  for (const node of nodes) for (const k of keys) verifyDir(`${TOOLS[k].label} on ${node.alias}`, destOf(k, node), exp);
  log(`  verified: ${keys.map((k) => TOOLS[k].label).join(', ')}${nodes.length > 1 ? ` on ${nodes.length} nodes` : ''} = source (${exp.size} files, ignored files absent)`);
}

// ---- state of the destinations ----

const synced = new Set();

/** Back to a fresh node for tool k: no destination; for skysync also no agent, remote state or local state. */
function resetTool(k, nodes = [HEAD]) {
  for (const node of nodes) {
    rmrf(destOf(k, node));
    if (TOOLS[k].kind === 'sky') rmrf(path.join(node.home, '.skysync'));
  }
  if (TOOLS[k].kind === 'sky') {
    rmrf(stateDir(TOOLS[k]));
    settled.delete(k);
    // The remote agent and its state are shared by both skysync variants on a node.
    for (const o of Object.keys(TOOLS)) if (TOOLS[o].kind === 'sky' && o !== k && nodes.includes(HEAD)) synced.delete(o);
  }
  synced.delete(k);
}

/** Untimed pushes that bring the given tools' destinations to the source's state. */
function syncUntimed(keys) {
  for (const k of keys) {
    const r = push(k);
    log(`  (untimed sync ${TOOLS[k].label}: ${fmtMs(r.ms)})`);
    synced.add(k);
  }
}
/**
 * skysync variants in the steady state of a user who pushes many times an hour: their watch service (started by
 * their first push) has answered a push, so the saved tree carries its token and a scan lists only what changed.
 * Without this, the first timed push of a scenario after a fresh sync would be the service's first answer, a full
 * scan, which a user pays once per service start (it idles out after 10 minutes).
 */
const settled = new Set();
function ensureSynced(keys) {
  const need = keys.filter((k) => !synced.has(k));
  if (need.length) {
    log(`  bringing ${need.map((k) => TOOLS[k].label).join(', ')} to the synced state (untimed)`);
    syncUntimed(need);
  }
  for (const k of keys.filter((k) => TOOLS[k].kind === 'sky' && !settled.has(k))) {
    // Up to three no-op pushes: a service still starting gives no token, and that push scans in full again.
    for (let i = 0; i < 3; i++) {
      const r = push(k);
      log(`  (untimed no-op ${TOOLS[k].label}, for its watch token: ${fmtMs(r.ms)}, ${r.stats.scan} scan)`);
      if (r.stats.scan === 'watch') break;
    }
    settled.add(k);
  }
}

// ---- mutations ----

const EPOCH = Math.floor(Date.now() / 1000) - 3600;
const mtimeFor = (round) => EPOCH + round * 10;
const textFiles = listFiles(SRC).filter((r) => !isIgnored(r) && !Object.values(BINARIES).includes(r) && r !== '.gitignore');

function appendLine(rel, round) {
  const abs = path.join(SRC, rel);
  const ext = path.extname(rel);
  const line = ['.py', '.pl', '.pm', '.sh', '.toml', '.yaml', '.yml', '.cmake', '.txt'].includes(ext) ? `# bench edit ${round}\n` : `// bench edit ${round}\n`;
  fs.appendFileSync(abs, line);
  fs.utimesSync(abs, mtimeFor(round), mtimeFor(round));
}

// ---- scenario machinery ----

const ALL = ['sky', 'skyw', 'rsync', 'rnir'];
let round = 0;

function order(keys, r) {
  return r % 2 === 0 ? keys : [...keys].reverse();
}

function wanted(name) {
  return !flags.only || flags.only.some((o) => name.startsWith(o));
}

function summarize(runs, tools, modes) {
  const out = {};
  for (const mode of modes) {
    out[mode] = {};
    for (const k of tools) {
      const rs = runs.filter((r) => r.mode === mode && r.tool === k);
      if (!rs.length) continue;
      const med = (f) => {
        const xs = rs.map(f).filter((x) => x !== null && x !== undefined && Number.isFinite(x));
        return xs.length ? median(xs) : null;
      };
      out[mode][k] = { n: rs.length, ms: med((r) => r.ms), wire: med((r) => r.wire), clientCpuMs: med((r) => r.clientCpuMs), serverCpuMs: med((r) => r.serverCpuMs) };
    }
  }
  return out;
}

let rigGone = null;
async function scenario(name, title, body) {
  if (!wanted(name)) return;
  if (rigGone) {
    results.failures.push({ scenario: name, error: `not run: ${rigGone}` });
    results.scenarios[name] = { title, runs: [], notes: [], error: `not run: ${rigGone}` };
    return;
  }
  const busy = flags.smoke ? null : await waitForQuiet({ maxMs: 20_000 });
  results.cpuBusyBefore[name] = busy;
  log(`${name}: ${title}`);
  const others = watchInterference();
  const sc = { title, runs: [], notes: [] };
  results.scenarios[name] = sc;
  const t0 = nowMs();
  try {
    await body(sc);
    if (VERIFY === 'each' && sc.verifyKeys) verifyTools(sc.verifyKeys, sc.verifyNodes);
  } catch (e) {
    log(`FAILED ${name}: ${e.stack ?? e}`);
    const msg = String(e.message ?? e);
    const lines = msg.split('\n');
    results.failures.push({ scenario: name, error: msg });
    sc.error = [
      lines[0],
      ...lines
        .slice(1)
        .filter((l) => /fail|error|missing/i.test(l))
        .slice(0, 2),
    ]
      .join(' | ')
      .slice(0, 600);
    // The destinations may be anywhere now: sync them again before the next scenario.
    synced.clear();
    if (!fs.existsSync(`/sys/class/net/${rig.iface}`) || !Object.values(rig.state.pids).every((p) => fs.existsSync(`/proc/${p}`))) {
      rigGone = 'the rig (veth, sshd or proxy) disappeared during the run: something else tore it down';
      log(rigGone);
    }
  }
  sc.wallMs = nowMs() - t0;
  results.otherCpuDuring[name] = others();
}

function record(sc, mode, rep, k, r, extra = {}) {
  const rec = { mode, rep, round, tool: k, ...r, ...extra };
  sc.runs.push(rec);
  return rec;
}

function shortRun(r) {
  return `${fmtMs(r.ms)}, ${fmtBytes(r.wire)} wire`;
}

/**
 * The usual shape: per repetition and page-cache mode, one mutation of the source, then every tool (alternating
 * order) brings its own destination from the previous state to the new one. `after` runs untimed at the end of
 * each round (for mutations that must be undone), `check` looks at a tool's result.
 */
async function pushScenario(sc, { tools = ALL, modes = MODES, mutate, after, check }) {
  ensureSynced(tools);
  for (let rep = 0; rep < REPS; rep++) {
    for (const mode of modes) {
      round++;
      const what = mutate ? mutate(round) : 'nothing changed';
      spawnSync('sync');
      for (const k of order(tools, round)) {
        if (mode === 'cold') dropCaches();
        const r = push(k);
        await tick();
        check?.(k, r);
        record(sc, mode, rep, k, r);
        log(
          `  rep ${rep + 1} ${mode}: ${TOOLS[k].label}: ${shortRun(r)}${r.stats?.filesChanged !== undefined ? ` (${r.stats.filesChanged} changed, ${fmtBytes(r.stats.bytesLiteral)} literal)` : ''}`,
        );
      }
      if (after) after(round);
      sc.mutation = what;
    }
  }
  sc.summary = summarize(sc.runs, tools, modes);
  sc.verifyKeys = tools;
}

// ---- the scenarios ----

await scenario('initial', 'initial push, empty destination (fresh node)', async (sc) => {
  const tools = ['sky', 'rsync'];
  for (let rep = 0; rep < REPS; rep++) {
    round++;
    for (const k of order(tools, round)) {
      resetTool(k);
      spawnSync('sync');
      if (FIRST_MODE === 'cold') dropCaches();
      const r = push(k);
      await tick();
      record(sc, FIRST_MODE, rep, k, r);
      synced.add(k);
      log(`  rep ${rep + 1}: ${TOOLS[k].label}: ${shortRun(r)}`);
    }
  }
  sc.summary = summarize(sc.runs, tools, [FIRST_MODE]);
  sc.notes.push(`${FIRST_MODE} page cache only; rsync --no-inc-recursive and the warm skysync are not run (link-bound, nothing to keep warm)`);
  verifyTools(tools);
});

await scenario('noop', 'no-op re-push', async (sc) => {
  await pushScenario(sc, {
    check: (k, r) => {
      if (TOOLS[k].kind === 'sky' && (r.stats.filesChanged !== 0 || r.stats.bytesLiteral !== 0))
        throw new Error(`${TOOLS[k].label}: no-op push changed ${r.stats.filesChanged} files / ${r.stats.bytesLiteral} literal bytes`);
    },
  });
});

const editFile = textFiles.find((r) => /\.(ts|js|mjs|py)$/.test(r) && fs.statSync(path.join(SRC, r)).size > 4 * KiB) ?? textFiles[0];
await scenario('edit', 'one source file edited', async (sc) => {
  await pushScenario(sc, {
    mutate: (r) => {
      appendLine(editFile, r);
      return `a line appended to ${editFile}`;
    },
    check: (k, r) => {
      if (TOOLS[k].kind === 'sky' && r.stats.filesChanged !== 1) throw new Error(`${TOOLS[k].label}: ${r.stats.filesChanged} files changed, expected 1`);
    },
  });
});

await scenario('insert', `1 byte inserted in the middle of a ${fmtBytes(BIN)} file`, async (sc) => {
  const abs = path.join(SRC, BINARIES.insert);
  await pushScenario(sc, {
    mutate: (r) => {
      insertByte(abs, Math.floor(fs.statSync(abs).size / 2), 0x40 + (r % 64));
      return `1 byte inserted at the middle of ${BINARIES.insert}`;
    },
  });
});

const TOUCH = Math.min(1000, Math.floor(textFiles.length * 0.3));
const EDIT = Math.min(50, Math.max(1, Math.floor(TOUCH / 20)));
await scenario('touch', `${TOUCH} files touched (mtime only), ${EDIT} of them edited`, async (sc) => {
  const picks = [];
  for (let i = 0; i < TOUCH; i++) picks.push(textFiles[Math.floor((i * textFiles.length) / TOUCH)]);
  const edited = new Set(picks.filter((_, i) => i % Math.floor(TOUCH / EDIT) === 0).slice(0, EDIT));
  await pushScenario(sc, {
    mutate: (r) => {
      for (const rel of picks) {
        if (edited.has(rel)) appendLine(rel, r);
        else fs.utimesSync(path.join(SRC, rel), mtimeFor(r), mtimeFor(r));
      }
      return `${picks.length} files touched, ${edited.size} of them edited`;
    },
    check: (k, r) => {
      if (TOOLS[k].kind === 'sky' && r.stats.bytesLiteral > 64 * KiB * edited.size + 64 * KiB)
        throw new Error(`${TOOLS[k].label}: ${r.stats.bytesLiteral} literal bytes for ${edited.size} small edits`);
    },
  });
});

await scenario('copy', `a new ${fmtBytes(BIN)} file = copy of another with ${fmtBytes(CHANGE)} changed`, async (sc) => {
  const base = path.join(SRC, BINARIES.copyBase);
  const copyRel = BINARIES.copyBase.replace(/\.bin$/, '-copy.bin');
  const copy = path.join(SRC, copyRel);
  await pushScenario(sc, {
    mutate: (r) => {
      fs.copyFileSync(base, copy);
      const pos = Math.floor(BIN * (0.15 + 0.3 * (r % 3))) + 12345;
      overwrite(copy, pos, CHANGE, `shaped-copy-${r}`);
      return `${BINARIES.copyBase} copied to ${copyRel}, ${fmtBytes(CHANGE)} overwritten`;
    },
    after: () => {
      fs.rmSync(copy);
      syncUntimed(ALL.filter((k) => synced.has(k)));
    },
  });
});

await scenario('rename', 'a directory of many files renamed', async (sc) => {
  // The largest directory three levels down (a package), at most a tenth of the files.
  const counts = new Map();
  for (const rel of textFiles) {
    const parts = rel.split('/');
    if (parts.length < 4) continue;
    const d = parts.slice(0, 3).join('/');
    counts.set(d, (counts.get(d) ?? 0) + 1);
  }
  const cap = Math.max(5, Math.floor(textFiles.length / 10));
  const [dir, n] = [...counts.entries()].filter(([, c]) => c <= cap).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0] ?? [];
  if (!dir) throw new Error('no directory to rename');
  const renamed = `${dir}-renamed`;
  sc.notes.push(`${dir} (${n} files) <-> ${renamed}, alternately`);
  await pushScenario(sc, {
    mutate: () => {
      const [from, to] = fs.existsSync(path.join(SRC, dir)) ? [dir, renamed] : [renamed, dir];
      fs.renameSync(path.join(SRC, from), path.join(SRC, to));
      return `${from} renamed to ${to} (${n} files)`;
    },
  });
});

await scenario('pull', `a changed ${fmtBytes(BIN)} checkpoint pulled back (${PULL_REGIONS} x ${fmtBytes(PULL_REGION)} changed)`, async (sc) => {
  const tools = ['sky', 'skyw', 'rsync'];
  ensureSynced(tools);
  const ckpt = BINARIES.checkpoint;
  const orig = fs.readFileSync(path.join(SRC, ckpt));
  const local = (k) => path.join(runRoot, `pull-${k}`, path.basename(ckpt));
  for (let rep = 0; rep < REPS; rep++) {
    for (const mode of MODES) {
      round++;
      // The job wrote a new checkpoint on the node: some regions changed.
      const next = Buffer.from(orig);
      const rs = new RandomStream(`shaped-pull-${round}`);
      for (let i = 0; i < PULL_REGIONS; i++) rs.next(PULL_REGION).copy(next, Math.floor(((i + 0.5) * next.length) / PULL_REGIONS) - PULL_REGION / 2 + 777);
      const want = crypto.createHash('sha1').update(next).digest('hex');
      for (const k of tools) {
        const remote = path.join(destOf(k), ckpt);
        fs.writeFileSync(remote, next);
        fs.chownSync(remote, HEAD.uid, HEAD.gid);
        fs.mkdirSync(path.dirname(local(k)), { recursive: true });
        fs.writeFileSync(local(k), orig); // the local copy is the previous checkpoint, an hour older
        fs.utimesSync(local(k), EPOCH, EPOCH);
      }
      spawnSync('sync');
      for (const k of order(tools, round)) {
        const t = TOOLS[k];
        if (mode === 'cold') dropCaches();
        let r;
        if (t.kind === 'sky') {
          const m = measured(process.execPath, skyArgs(t, ['pull', `${CLUSTER}:~/${t.destDir}/${ckpt}`, local(k), '--json']), skyEnv(t));
          r = { ...strip(m), stats: parseSkyJson(m.stdout, `${t.label} pull`) };
        } else {
          const m = measured('rsync', ['-az', '--stats', '-e', `ssh -F ${CFG1}`, `${CLUSTER}:~/${t.destDir}/${ckpt}`, local(k)], baseEnv);
          r = { ...strip(m), stats: parseRsyncStats(m.stdout) };
        }
        await tick();
        const got = hashFile(local(k));
        if (got !== want) throw new Error(`${t.label} pull: the local checkpoint differs from the remote one`);
        record(sc, mode, rep, k, r);
        log(`  rep ${rep + 1} ${mode}: ${t.label}: ${shortRun(r)}`);
      }
    }
  }
  // The remote checkpoints go back to the source's version (skysync overwrites files changed on the node).
  for (const k of tools) rmrf(path.join(runRoot, `pull-${k}`));
  syncUntimed(tools);
  sc.summary = summarize(sc.runs, tools, MODES);
  sc.notes.push(`skysync: \`pull bench:~/DEST/${ckpt} LOCAL --json\`; rsync: \`rsync -az -e 'ssh -F CFG' bench:~/DEST/${ckpt} LOCAL\`; LOCAL holds the previous checkpoint`);
  sc.verifyKeys = tools;
});

await scenario('fanout', 'initial push to 4 nodes (head + 3 workers, one shared link)', async (sc) => {
  const nodes = rig.nodes;
  const workers = nodes.slice(1);
  const expectedCount = listFiles(SRC).filter((r) => !isIgnored(r)).length;
  let pending = null;
  const runsWanted = (k) => (k === 'rsync' && pending ? 1 : REPS);
  const done = { sky: 0, rsync: 0 };
  let skyError = null;
  for (let rep = 0; rep < REPS; rep++) {
    round++;
    for (const k of order(['sky', 'rsync'], round)) {
      if (k === 'sky' && (pending || skyError)) continue;
      if (done[k] >= runsWanted(k)) continue;
      resetTool(k, nodes);
      spawnSync('sync');
      if (FIRST_MODE === 'cold') dropCaches();
      let r;
      if (k === 'sky') {
        try {
          r = push('sky', CFG4);
        } catch (e) {
          // Keep measuring the rsync baseline; the step still fails at the end.
          skyError = e;
          log(`  skysync push bench failed: ${String(e.message).split('\n').slice(0, 6).join(' | ')}`);
          continue;
        }
        // Where the workers' data came from: the head's relay (over the rig's namespace, not the shaped link) or the client.
        const ws = (r.stats?.nodes ?? []).slice(1).map((n) => n?.workdir ?? {});
        const relayed = ws.reduce((a, w) => a + (w.bytesRelay ?? 0), 0);
        if (rep === 0)
          sc.notes.push(
            `skysync: the ${ws.length} workers took ${fmtBytes(relayed)} from the head's relay and ${fmtBytes(ws.reduce((a, w) => a + (w.bytesLiteral ?? 0), 0))} of literal data from the client`,
          );
        const reached = workers.filter((n) => fs.existsSync(destOf('sky', n)) && listFiles(destOf('sky', n)).length === expectedCount);
        r.nodesReached = 1 + reached.length;
        if (reached.length < workers.length) {
          pending = `\`skysync push ${CLUSTER}\` reached ${r.nodesReached} of ${nodes.length} nodes (multi-node push not in the CLI yet)`;
          log(`  ${pending}: skysync reported as pending [cli]`);
          r.pendingCli = true;
        }
      } else {
        // Four rsyncs in parallel, one per node, as SkyPilot runs them.
        const a = probe();
        const t0 = nowMs();
        const codes = await Promise.all(
          nodes.map(
            (n) =>
              new Promise((resolve) => {
                const c = spawn('rsync', [...RSYNC_FLAGS, '--stats', '-e', `ssh -F ${CFG4}`, `${SRC}/`, `${n.alias}:~/${TOOLS.rsync.destDir}/`], {
                  env: baseEnv,
                  stdio: ['ignore', 'ignore', 'pipe'],
                });
                let err = '';
                c.stderr.on('data', (d) => (err += d));
                c.on('close', (code, sig) => {
                  interrupted(sig);
                  resolve({ node: n.alias, code, sig, err });
                });
              }),
          ),
        );
        const ms = nowMs() - t0;
        settle();
        const bad = codes.filter((c) => c.code !== 0);
        if (bad.length) throw new Error(`parallel rsync failed on ${bad.map((b) => `${b.node} (${b.code ?? b.sig}): ${b.err.slice(-300)}`).join('; ')}`);
        r = delta(a, probe(), ms);
      }
      done[k]++;
      record(sc, FIRST_MODE, rep, k, r);
      log(`  rep ${rep + 1}: ${k === 'sky' ? 'skysync push bench' : '4 x rsync -az in parallel'}: ${shortRun(r)}`);
    }
  }
  sc.pending = pending;
  if (skyError) {
    sc.summary = summarize(sc.runs, ['sky', 'rsync'], [FIRST_MODE]);
    throw skyError;
  }
  if (pending) sc.notes.push(`pending [cli]: ${pending}; its timing (head only) is in the raw runs, not in the table${REPS > 1 ? '; the rsync baseline ran once' : ''}`);
  sc.summary = summarize(sc.runs, ['sky', 'rsync'], [FIRST_MODE]);
  // Every node's rsync destination, and skysync's where it reached.
  const exp = expectedTree();
  for (const n of nodes) verifyDir(`4 x rsync on ${n.alias}`, destOf('rsync', n), exp);
  verifyDir(`skysync on ${HEAD.alias}`, destOf('sky', HEAD), exp);
  if (!pending) for (const n of workers) verifyDir(`skysync on ${n.alias}`, destOf('sky', n), exp);
  log(`  verified the fan-out destinations (${exp.size} files each)`);
  synced.add('sky');
  synced.add('rsync');
});

// ---- final check, report ----

if (VERIFY === 'end' && !results.failures.length) {
  try {
    verifyTools([...synced]);
  } catch (e) {
    results.failures.push({ scenario: 'verify', error: e.message });
  }
}

const S = (sc, mode, k) => sc?.summary?.[mode]?.[k] ?? null;
const ratio = (a, b) => (a && b ? a / b : null);
const verdict = (ok) => (ok === null ? 'n/a' : ok ? 'met' : '**MISSED**');
const fr = (x) => (x === null || !Number.isFinite(x) ? '—' : `${x.toFixed(x >= 10 ? 0 : x >= 1 ? 1 : 2)}x`);

function targetFor(name, mode, sc) {
  const sky = S(sc, mode, 'sky');
  const skyw = S(sc, mode, 'skyw');
  const rs = S(sc, mode, 'rsync');
  const rc = ratio(rs?.ms, sky?.ms);
  const rw = ratio(rs?.ms, skyw?.ms);
  switch (name) {
    case 'noop': {
      const t = TARGETS.noop;
      const ok = rw !== null && rc !== null && skyw ? rw >= t.warm && rc >= t.cold && skyw.wire <= t.wire : null;
      return { text: `>= ${t.warm}x warm (${fr(rw)}), >= ${t.cold}x cold CLI (${fr(rc)}), <= ${fmtBytes(t.wire)} wire (${fmtBytes(skyw?.wire)}): ${verdict(ok)}`, met: ok };
    }
    case 'edit':
    case 'touch': {
      const t = TARGETS[name];
      const ok = rw === null ? null : rw >= t;
      return { text: `>= ${t}x (warm ${fr(rw)}): ${verdict(ok)}`, met: ok };
    }
    case 'insert':
    case 'copy': {
      const t = TARGETS[name];
      const ok = rw === null || !skyw ? null : rw >= t.speedup && skyw.wire <= t.wire;
      return { text: `>= ${t.speedup}x (warm ${fr(rw)}), <= ${fmtBytes(t.wire)} wire (${fmtBytes(skyw?.wire)}): ${verdict(ok)}`, met: ok };
    }
    case 'initial': {
      const t = TARGETS.initial;
      const timeRatio = sky && rs ? sky.ms / rs.ms : null;
      const floorMs = !flags.loopback && wd.floor ? (wd.floor.bytes * 8 * 1000) / (parseRate(flags.rate) * (1448 / 1514)) : null;
      const ok1 = timeRatio === null ? null : timeRatio <= t.ratio;
      const ok2 = floorMs === null || !sky ? null : sky.ms <= floorMs * t.floorSlack;
      const ok = ok1 === null ? null : ok2 === null ? ok1 : ok1 && ok2;
      return {
        text: `<= ${t.ratio}x rsync's time (${timeRatio === null ? '—' : `${timeRatio.toFixed(2)}x`}), <= floor + 10% (floor ${floorMs === null ? 'n/a' : fmtMs(floorMs)}): ${verdict(ok)}`,
        met: ok,
        floorMs,
      };
    }
    case 'fanout': {
      if (sc.pending) return { text: `<= ${TARGETS.fanout}x the 4 parallel rsyncs: pending [cli]`, met: null };
      const tr = sky && rs ? sky.ms / rs.ms : null;
      const ok = tr === null ? null : tr <= TARGETS.fanout;
      return { text: `<= ${TARGETS.fanout}x the 4 parallel rsyncs (${tr === null ? '—' : `${tr.toFixed(2)}x`}): ${verdict(ok)}`, met: ok };
    }
    default:
      return { text: '—', met: null };
  }
}

const rows = [];
const summaryRows = [];
for (const [name, sc] of Object.entries(results.scenarios)) {
  if (!sc.summary) {
    rows.push([name, '', '**step failed**', '', '', '', '', '', '', sc.error ?? '']);
    continue;
  }
  for (const mode of Object.keys(sc.summary)) {
    const sky = S(sc, mode, 'sky');
    const skyw = S(sc, mode, 'skyw');
    const rs = S(sc, mode, 'rsync');
    const rn = S(sc, mode, 'rnir');
    const tgt = sc.error ? { text: `**step failed:** ${sc.error}`, met: null } : targetFor(name, mode, sc);
    const pendingSky = name === 'fanout' && sc.pending;
    const cpu = (x) => (x ? `${fmtMs(x.clientCpuMs ?? NaN)} + ${x.serverCpuMs === null ? 'n/a' : fmtMs(x.serverCpuMs)}` : '—');
    const skyCell = pendingSky ? 'pending [cli]' : sky ? fmtMs(sky.ms) : '—';
    rows.push([
      `${name}${name === 'fanout' ? ' (4 nodes)' : ''}`,
      mode,
      skyCell,
      skyw ? fmtMs(skyw.ms) : '—',
      rs ? `${fmtMs(rs.ms)}${name === 'fanout' ? ' (4 in parallel)' : ''}` : '—',
      rn ? fmtMs(rn.ms) : '—',
      pendingSky ? '—' : `${fr(ratio(rs?.ms, sky?.ms))} / ${fr(ratio(rs?.ms, skyw?.ms))}`,
      `${pendingSky ? '—' : sky ? fmtBytes(sky.wire) : '—'} / ${skyw ? fmtBytes(skyw.wire) : '—'} / ${rs ? fmtBytes(rs.wire) : '—'}`,
      `${pendingSky ? '—' : cpu(sky)} / ${cpu(rs)}`,
      tgt.text,
    ]);
    summaryRows.push({
      scenario: name,
      title: sc.title,
      mode,
      sky: pendingSky ? null : sky,
      skyw,
      rsync: rs,
      rnir: rn,
      ratioCold: pendingSky ? null : ratio(rs?.ms, sky?.ms),
      ratioWarm: ratio(rs?.ms, skyw?.ms),
      target: tgt.text,
      met: tgt.met,
      floorMs: tgt.floorMs ?? null,
    });
  }
}
results.summary = summaryRows;
results.buildAtEnd = buildInfo();
const rebuilt = buildChanged(results.buildAtEnd, results.machine.build);

const linkDesc = flags.loopback
  ? 'loopback (no shaping, no delay; wire bytes from `lo`, approximate)'
  : `${flags.rate} each way (tbf), ${flags.rtt} ms RTT (delay proxy), netns + veth`;
const fullTargets = !flags.loopback && parseRate(flags.rate) === 100e6 && flags.rtt === 20;
const header =
  `## skysync vs rsync on a shaped link${flags.smoke ? ' (smoke)' : ''}: ${linkDesc}\n\n` +
  `Workdir \`${sizeName}\`: ${wd.counts.syncedFiles} synced files (${fmtBytes(wd.counts.syncedBytes)}), ${wd.counts.ignoredFiles} ignored (${fmtBytes(wd.counts.ignoredBytes)}); ` +
  `floor after dedupe + zstd -3: ${wd.floor ? fmtBytes(wd.floor.bytes) : 'n/a'}. Median of ${REPS}, alternating order; page cache: ${results.pageCache}. ` +
  `\`ssh true\` through the rig: ${fmtMs(rig.info.sshTrueMs)}. ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, node ${process.version}, ${results.machine.rsync}, build ${results.machine.build.head} (+${results.machine.build.dirtyFiles} modified files).\n\n` +
  'Times are wall times of the whole command. Ratio = rsync -az time / skysync time (cold CLI / warm). Wire = bytes on the client veth, both directions ' +
  '(skysync cold CLI / skysync warm / rsync -az). CPU = client (command + descendants) + server (sshd cgroup: sessions, agent, rsync). ' +
  `Targets are judged on the warm skysync against rsync -az in the same run${fullTargets ? '' : ' (they are defined for 100 Mbit/s and 20 ms RTT: this run is not that)'}.\n`;

const mdTable = table(
  [
    'scenario',
    'cache',
    'skysync cold CLI',
    'skysync warm',
    'rsync -az',
    'rsync -az --no-inc-rec',
    'rsync / skysync (cold / warm)',
    'wire (sky cold / warm / rsync)',
    'CPU client+server (sky cold / rsync)',
    'target',
  ],
  rows,
);
const notes = [];
for (const [name, sc] of Object.entries(results.scenarios)) {
  const bits = [...(sc.mutation ? [`change: ${sc.mutation}`] : []), ...sc.notes];
  if (bits.length) notes.push(`- ${name}: ${bits.join('; ')}`);
}
const transports = new Set(Object.values(results.scenarios).flatMap((sc) => sc.runs.map((r) => r.stats?.transport).filter(Boolean)));
if (transports.size && [...transports].some((t) => t !== 'ssh')) notes.push(`- **skysync transports seen: ${[...transports].join(', ')}** (not only its agent over ssh)`);
notes.push(
  '- "warm" = skysync in its default environment: it keeps the SSH connection to each node in a background process between commands (its CPU counts as client CPU); "cold CLI" = SKYSYNC_CONTROL_PERSIST=0, a new SSH connection every command.',
);
for (const n of results.notes) notes.push(`- ${n}`);
const md = [
  header,
  mdTable,
  '',
  ...(notes.length ? ['Notes:', ...notes, ''] : []),
  results.failures.length
    ? `**${results.failures.length} step(s) failed:** ${results.failures.map((f) => `${f.scenario}: ${results.scenarios[f.scenario]?.error ?? f.error.split('\n')[0]}`).join('; ')}\n`
    : '',
  rebuilt ? '**Warning:** the build changed during this run; the numbers may mix two builds. Re-run.\n' : '',
  `CPU taken by other processes on this shared machine during each scenario: ${Object.keys(results.otherCpuDuring)
    .map((k) => `${k} ${(results.otherCpuDuring[k] * 100).toFixed(0)}%`)
    .join(', ')}.`,
].join('\n');
process.stdout.write(md + '\n');

// ---- SVG: grouped bars of median times, log scale ----

function svgChart() {
  const series = [
    ['sky', 'skysync (cold CLI)', '#1f77b4'],
    ['skyw', 'skysync (warm)', '#6baed6'],
    ['rsync', 'rsync -az', '#d62728'],
    ['rnir', 'rsync -az --no-inc-recursive', '#ff9896'],
  ];
  const groups = summaryRows.filter((r) => series.some(([k]) => r[k === 'rsync' ? 'rsync' : k]?.ms));
  if (!groups.length) return null;
  const vals = groups.flatMap((g) => series.map(([k]) => g[k]?.ms).filter((x) => x > 0));
  const lo = 10 ** Math.floor(Math.log10(Math.min(...vals)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...vals)));
  const bw = 13;
  const gap = 22;
  const gw = series.length * bw + gap;
  const left = 64;
  const top = 48;
  const ph = 300;
  const width = Math.max(640, left + groups.length * gw + 20);
  const height = top + ph + 150;
  const y = (v) => top + ph - ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * ph;
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(
    `<text x="${left}" y="18" font-size="14" font-weight="bold">${esc(`skysync vs rsync, ${flags.loopback ? 'loopback' : `${flags.rate}, ${flags.rtt} ms RTT`}: median wall time (log scale)${flags.smoke ? ', smoke' : ''}`)}</text>`,
  );
  series.forEach(([, label, color], i) => {
    const x = left + i * 190;
    out.push(`<rect x="${x}" y="28" width="10" height="10" fill="${color}"/><text x="${x + 14}" y="37">${esc(label)}</text>`);
  });
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    for (const m of [1, 2, 5]) {
      const v = d * m;
      if (v > hi * 1.0001) break;
      const yy = y(v).toFixed(1);
      out.push(`<line x1="${left}" x2="${width - 10}" y1="${yy}" y2="${yy}" stroke="${m === 1 ? '#bbb' : '#eee'}"/>`);
      if (m === 1 || vals.length < 40) out.push(`<text x="${left - 6}" y="${(Number(yy) + 4).toFixed(1)}" text-anchor="end" fill="#444">${esc(fmtMs(v))}</text>`);
    }
  }
  groups.forEach((g, gi) => {
    const gx = left + gi * gw + gap / 2;
    series.forEach(([k, label, color], si) => {
      const v = g[k]?.ms;
      if (!(v > 0)) return;
      const yy = y(v);
      out.push(
        `<rect x="${gx + si * bw}" y="${yy.toFixed(1)}" width="${bw - 2}" height="${(top + ph - yy).toFixed(1)}" fill="${color}"><title>${esc(`${g.scenario} (${g.mode}) ${label}: ${fmtMs(v)}`)}</title></rect>`,
      );
    });
    if (g.scenario === 'fanout' && !g.sky)
      out.push(`<text x="${gx + 2}" y="${top + ph - 4}" font-size="9" fill="#1f77b4" transform="rotate(-90 ${gx + 8} ${top + ph - 4})">pending</text>`);
    const lx = gx + (series.length * bw) / 2;
    const label = `${g.scenario} (${g.mode})${g.ratioWarm ? ` ${fr(g.ratioWarm)}` : ''}`;
    out.push(`<text x="${lx}" y="${top + ph + 12}" text-anchor="end" transform="rotate(-45 ${lx} ${top + ph + 12})">${esc(label)}</text>`);
  });
  out.push(`<line x1="${left}" x2="${width - 10}" y1="${top + ph}" y2="${top + ph}" stroke="#333"/>`);
  out.push(
    `<text x="${left}" y="${height - 8}" fill="#666">${esc(`${wd.counts.syncedFiles} files, ${fmtBytes(wd.counts.syncedBytes)}; median of ${REPS}; label ratio = rsync -az / skysync warm; build ${results.commit}`)}</text>`,
  );
  out.push('</svg>');
  return out.join('\n') + '\n';
}

const svg = svgChart();
const base = resultName;
// Development sizes (--files/--bin-mib) write next to their data, not into the repository.
const outDir = custom ? path.join(CACHE_ROOT, 'results') : RESULTS_DIR;
fs.mkdirSync(outDir, { recursive: true });
if (svg) fs.writeFileSync(path.join(outDir, `${base}.svg`), svg);
if (flags.keep) {
  results.kept = {
    runRoot,
    src: SRC,
    // Every head destination: all of them equal the source at the end (nothing changed since each last sync).
    dests: Object.fromEntries(
      Object.keys(TOOLS)
        .filter((k) => fs.existsSync(destOf(k)))
        .map((k) => [k, destOf(k)]),
    ),
    fanout: results.scenarios.fanout ? rig.nodes.map((n) => ({ node: n.alias, rsync: destOf('rsync', n), sky: destOf('sky', n) })) : null,
  };
}
results.markdown = md;
const out = path.join(outDir, `${base}.json`);
fs.writeFileSync(out, JSON.stringify(results, null, 2) + '\n');
log(`wrote ${out}${svg ? ` and ${base}.svg` : ''}`);

// ---- clean up: the rig always; the data unless --keep ----

cleanup();
if (!flags.keep) {
  for (const n of rig.nodes) for (const k of Object.keys(TOOLS)) rmrfInBackground(destOf(k, n));
  rmrfInBackground(runRoot);
  rmrfInBackground(STATE_ROOT);
}
if (results.failures.length) {
  log(`${results.failures.length} step(s) failed: ${results.failures.map((f) => f.scenario).join(', ')}`);
  process.exitCode = 1;
}
