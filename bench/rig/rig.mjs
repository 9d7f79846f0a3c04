#!/usr/bin/env node
// The shaped-link rig for bench/shaped.mjs: a "cluster" of N nodes behind one WAN-like link, on this machine.
//
//   client (root netns) --127.0.0.1--> delay proxy (node, +RTT/2 each way) --veth ssb-c/ssb-s, tbf RATE each way-->
//   sshd in netns `skysync-bench` (10.213.37.2:2222), logging in as skysync-bench1..N (one Unix user and home
//   per node: `bench` is the head, `bench-worker1..` the workers)
//
// Every node shares the one link, as the nodes of a cloud cluster share the client's uplink. The sshd (and so
// every session and agent it starts) runs in its own cgroup v2, whose cpu.stat gives the server side's CPU; the
// proxy has its own cgroup too. Bytes on the wire are the veth's counters on the client end (Ethernet + IP + TCP
// headers included, one MTU-sized segment per packet). With `loopback`, there is no namespace, shaping or proxy: sshd listens on 127.0.0.1 and the
// counters are those of `lo` (approximate: anything else on lo counts too).
//
//   node bench/rig/rig.mjs up [--rate 100mbit] [--rtt 20] [--loopback] [--nodes 4]   set up, print the ssh config
//   node bench/rig/rig.mjs status                                                    what is up
//   node bench/rig/rig.mjs down [--wipe] [--force]   tear down (--wipe also empties the bench users' homes;
//                                                   a rig a running benchmark owns is left alone unless --force)
//
// Needs root. Everything it creates is recorded in CACHE_ROOT/rig/state.json as it goes, so `down` (or the next
// `up`) can remove a partial or orphaned setup. Only one rig can be up at a time (the users are fixed).

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CACHE_ROOT = process.env.SKYSYNC_BENCH_DIR || '/tmp/skysync-bench';
export const RIG_DIR = path.join(CACHE_ROOT, 'rig');
const STATE_FILE = path.join(RIG_DIR, 'state.json');
const SSHD = '/usr/sbin/sshd';
const NETNS = 'skysync-bench';
const VETH_CLIENT = 'ssb-c';
const VETH_SERVER = 'ssb-s';
const NET_PREFIX = '10.213.37';
const CLIENT_IP = `${NET_PREFIX}.1`;
const SERVER_IP = `${NET_PREFIX}.2`;
const SSH_PORT = 2222;
const USER_PREFIX = 'skysync-bench';
export const CLUSTER = 'bench';
const CGROUP_NAMES = { sshd: 'skysync-bench-sshd', proxy: 'skysync-bench-proxy' };

export class RigBusyError extends Error {}

const sleepSync = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function sh(cmd, args, { allowFail = false, input } = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  if (!allowFail && (r.error || r.status !== 0)) {
    throw new Error(`${cmd} ${args.join(' ')}: ${r.error?.message ?? `exit ${r.status}`} ${(r.stderr || '').trim()}`);
  }
  return r;
}

function which(cmd) {
  for (const d of (process.env.PATH ?? '').split(':').concat(['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'])) {
    if (!d) continue;
    try {
      fs.accessSync(path.join(d, cmd), fs.constants.X_OK);
      return path.join(d, cmd);
    } catch {
      /* next */
    }
  }
  return null;
}

/** Parses "100mbit", "1gbit", "500kbit", "12mbps" (bytes), or a plain number of bits/s. */
export function parseRate(s) {
  const m = /^(\d+(?:\.\d+)?)\s*(k|m|g)?(bit|bps)?$/i.exec(String(s).trim());
  if (!m) throw new Error(`cannot parse rate ${s} (try 100mbit)`);
  const mult = { k: 1e3, m: 1e6, g: 1e9 }[(m[2] || '').toLowerCase()] ?? 1;
  const bits = Number(m[1]) * mult * ((m[3] || 'bit').toLowerCase() === 'bps' ? 8 : 1);
  if (!(bits >= 64_000)) throw new Error(`rate ${s} is too low`);
  return bits;
}

/** tbf parameters for a rate: a burst of ~4 ms of line rate (at least two full frames), a queue of ~20 ms. */
export function tbfParams(rateBits) {
  const bytesPerMs = rateBits / 8 / 1000;
  const burst = Math.max(2 * 1514 + 100, Math.ceil(bytesPerMs * 4));
  return { rate: `${Math.round(rateBits / 1000)}kbit`, burst, latencyMs: 20 };
}

/** Why the rig cannot run here (null when it can). */
export function rigSkipReason({ loopback = false } = {}) {
  if (process.platform !== 'linux') return `needs Linux, this is ${process.platform}`;
  if (process.getuid?.() !== 0) return 'needs root (useradd, network namespaces, sshd privilege separation)';
  if (!fs.existsSync(SSHD)) return `${SSHD} missing (apt-get install -y openssh-server)`;
  for (const t of ['ssh', 'ssh-keygen', 'useradd', 'usermod', 'rsync', ...(loopback ? [] : ['ip', 'tc'])]) if (!which(t)) return `\`${t}\` missing`;
  return null;
}

// ---- state: what exists, recorded as it is created ----

function readState() {
  try {
    return JSON.parse(fs.readFileSync(STATE_FILE, 'utf8'));
  } catch {
    return null;
  }
}

function writeState(st) {
  fs.mkdirSync(RIG_DIR, { recursive: true });
  const tmp = `${STATE_FILE}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(st, null, 2) + '\n');
  fs.renameSync(tmp, STATE_FILE);
}

/** Whether `pid` runs (a zombie does not: in a container whose init does not reap, orphans stay zombies). */
function pidAlive(pid) {
  if (!pid) return false;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function cmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return null;
  }
}

function procInfo(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const uidLine = fs
      .readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Uid:'));
    return { ppid, uid: Number(uidLine?.split(/\s+/)[1]) };
  } catch {
    return null;
  }
}

/**
 * The pids this rig is responsible for: the given roots (sshd, proxy) if they still run what we started, their
 * descendants, anything running as a bench user, and client-side processes whose command line names the rig's
 * directory (ssh masters and helpers started with our ssh config).
 */
function rigPids(st) {
  const all = new Map();
  for (const n of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    const info = procInfo(Number(n));
    if (info && pidAlive(Number(n))) all.set(Number(n), info);
  }
  const out = new Set();
  for (const [name, pid] of Object.entries(st.pids ?? {})) {
    const cl = cmdline(pid);
    if (!cl || !all.has(pid)) continue;
    const ours = name === 'sshd' ? cl.some((a) => a.includes(st.dir)) : cl.some((a) => a.includes('delay-proxy.mjs'));
    if (ours) out.add(pid);
  }
  const uids = new Set((st.users ?? []).map((u) => u.uid));
  for (const [pid, info] of all) {
    if (pid === process.pid) continue;
    if (uids.has(info.uid)) out.add(pid);
    else if (st.dir && info.uid === 0) {
      const cl = cmdline(pid);
      if (cl?.some((a) => a.includes(path.join(st.dir, 'ssh_config'))) && !cl.some((a) => a.endsWith('rig.mjs'))) out.add(pid);
    }
  }
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, info] of all) {
      if (out.has(pid) || !out.has(info.ppid) || pid === process.pid) continue;
      out.add(pid);
      grew = true;
    }
  }
  return [...out];
}

function killPidsSync(pids) {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline && pids.some(pidAlive)) sleepSync(25);
  for (const p of pids.filter(pidAlive)) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  const hard = Date.now() + 2000;
  while (Date.now() < hard && pids.some(pidAlive)) sleepSync(25);
}

// ---- cgroups ----

/** Where to make CPU-accounting cgroups: v2 (pure or the hybrid `unified` mount), else v1 cpuacct. */
function cgroupBase() {
  const candidates = [
    { kind: 'v2', dir: '/sys/fs/cgroup', test: 'cgroup.procs', v2: true },
    { kind: 'v2', dir: '/sys/fs/cgroup/unified', test: 'cgroup.procs', v2: true },
    { kind: 'v1', dir: '/sys/fs/cgroup/cpuacct', test: 'cpuacct.usage' },
    { kind: 'v1', dir: '/sys/fs/cgroup/cpu,cpuacct', test: 'cpuacct.usage' },
  ];
  for (const c of candidates) {
    if (c.v2 && !fs.existsSync(path.join(c.dir, 'cgroup.subtree_control'))) continue;
    if (!fs.existsSync(path.join(c.dir, c.test))) continue;
    return c;
  }
  return null;
}

function makeCgroup(name) {
  const base = cgroupBase();
  if (!base) return null;
  const dir = path.join(base.dir, name);
  try {
    if (fs.existsSync(dir)) removeCgroup({ dir, kind: base.kind });
    fs.mkdirSync(dir);
    const cg = { kind: base.kind, dir };
    if (readCgroupUsec(cg) === null) throw new Error('no CPU usage file');
    return cg;
  } catch {
    return null;
  }
}

export function readCgroupUsec(cg) {
  if (!cg) return null;
  try {
    if (cg.kind === 'v2') {
      const m = /^usage_usec (\d+)$/m.exec(fs.readFileSync(path.join(cg.dir, 'cpu.stat'), 'utf8'));
      return m ? Number(m[1]) : null;
    }
    return Number(fs.readFileSync(path.join(cg.dir, 'cpuacct.usage'), 'utf8').trim()) / 1000;
  } catch {
    return null;
  }
}

function moveToCgroup(cg, pid) {
  if (!cg) return false;
  try {
    fs.writeFileSync(path.join(cg.dir, cg.kind === 'v2' ? 'cgroup.procs' : 'tasks'), String(pid));
    return true;
  } catch {
    return false;
  }
}

function removeCgroup(cg) {
  if (!cg?.dir || !fs.existsSync(cg.dir)) return;
  // Whatever is left in it (should be nothing by now) goes back to the root first.
  try {
    const procs = fs
      .readFileSync(path.join(cg.dir, cg.kind === 'v2' ? 'cgroup.procs' : 'tasks'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number);
    killPidsSync(procs.filter((p) => p !== process.pid));
  } catch {
    /* ignore */
  }
  for (let i = 0; i < 20; i++) {
    try {
      fs.rmdirSync(cg.dir);
      return;
    } catch {
      sleepSync(50);
    }
  }
}

// ---- users ----

function getpw(user) {
  for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === user && f.length >= 7) return { user, uid: Number(f[2]), gid: Number(f[3]), home: f[5], shell: f[6] };
  }
  return null;
}

function ensureUser(user) {
  let pw = getpw(user);
  if (!pw) {
    // `-p '*'`: no password but not locked; useradd's '!' makes sshd without PAM refuse even key logins.
    for (let attempt = 0; ; attempt++) {
      const r = sh('useradd', ['-m', '-s', '/bin/bash', '-p', '*', user], { allowFail: true });
      pw = getpw(user);
      if (pw) break;
      if (attempt >= 20) throw new Error(`useradd ${user}: ${r.stderr}`);
      sleepSync(100 + Math.random() * 200);
    }
  }
  const shadow = fs
    .readFileSync('/etc/shadow', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${user}:`));
  if (shadow?.split(':')[1]?.startsWith('!')) sh('usermod', ['-p', '*', user]);
  if (pw.shell !== '/bin/bash') sh('usermod', ['-s', '/bin/bash', user]);
  return getpw(user);
}

function chownR(p, uid, gid) {
  fs.lchownSync(p, uid, gid);
  if (fs.lstatSync(p).isDirectory()) for (const n of fs.readdirSync(p)) chownR(path.join(p, n), uid, gid);
}

/** Empties a bench user's home and refills it from /etc/skel. */
export function resetHome(u) {
  if (!u.home.startsWith('/home/') || !path.basename(u.home).startsWith(USER_PREFIX)) throw new Error(`refusing to wipe ${u.home}`);
  spawnSync('rm', ['-rf', '--', u.home], { stdio: 'ignore' });
  fs.rmSync(u.home, { recursive: true, force: true });
  fs.mkdirSync(u.home, { recursive: true, mode: 0o755 });
  if (fs.existsSync('/etc/skel')) fs.cpSync('/etc/skel', u.home, { recursive: true });
  chownR(u.home, u.uid, u.gid);
  fs.chmodSync(u.home, 0o755);
}

// ---- waiting for services ----

async function waitForSsh(host, port, dead, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const why = dead();
    if (why) throw new Error(why);
    const ok = await new Promise((resolve) => {
      const sock = net.connect(port, host);
      let buf = '';
      const done = (v) => {
        sock.destroy();
        resolve(v);
      };
      sock.setTimeout(3000, () => done(false));
      sock.on('data', (d) => {
        buf += d.toString('latin1');
        if (buf.includes('\n')) done(buf.startsWith('SSH-2.0-'));
      });
      sock.on('error', () => done(false));
      sock.on('close', () => done(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`no SSH banner from ${host}:${port} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(a.port));
    });
  });
}

function spawnDetached(cmd, args, logFile) {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  child.unref();
  let exited = null;
  // The log may be gone already: a process this run tore down can report its exit after the next rig's setup.
  const said = () => {
    try {
      return fs.readFileSync(logFile, 'utf8').trim().slice(-2000);
    } catch {
      return '';
    }
  };
  child.once('exit', (code, sig) => (exited = `${path.basename(cmd)} exited (${code ?? sig}): ${said()}`));
  child.once('error', (e) => (exited = `${cmd} failed to start: ${e.message}`));
  return { child, dead: () => exited };
}

// ---- teardown ----

/**
 * Removes everything a rig state records (synchronous, best effort, safe to repeat; usable from exit handlers).
 * `wipe` also empties the bench users' homes.
 */
export function teardown(st = readState(), { wipe = false, log = () => {} } = {}) {
  if (!st) return false;
  const pids = rigPids(st);
  if (pids.length) log(`rig: ending ${pids.length} process(es): ${pids.join(' ')}`);
  killPidsSync(pids);
  if (st.veth) sh('ip', ['link', 'del', st.veth], { allowFail: true }); // deletes the pair and both qdiscs
  if (st.netns) sh('ip', ['netns', 'del', st.netns], { allowFail: true });
  for (const cg of Object.values(st.cgroups ?? {})) removeCgroup(cg);
  if (st.nodeSymlink) {
    try {
      if (fs.readlinkSync(st.nodeSymlink.link) === st.nodeSymlink.target) fs.unlinkSync(st.nodeSymlink.link);
    } catch {
      /* gone */
    }
  }
  if (wipe) {
    for (const u of st.users ?? []) {
      try {
        resetHome(u);
      } catch (e) {
        log(`rig: could not wipe ${u.home}: ${e.message}`);
      }
    }
  }
  try {
    fs.rmSync(STATE_FILE, { force: true });
  } catch {
    /* ignore */
  }
  return true;
}

/** Wipes the bench users' homes (after a `--keep` run), whether or not a rig is up. */
export function wipeHomes(nodes = 4) {
  for (let i = 1; i <= nodes; i++) {
    const pw = getpw(`${USER_PREFIX}${i}`);
    if (pw) resetHome(pw);
  }
}

// ---- up ----

/**
 * Sets the rig up and returns a handle: { sshConfig, nodes: [{alias, user, uid, gid, home}], iface, counters(),
 * cpu(), info, down() }. Throws RigBusyError if another live process owns a rig.
 */
export async function up({ rate = '100mbit', rttMs = 20, loopback = false, nodes = 4, log = () => {} } = {}) {
  const why = rigSkipReason({ loopback });
  if (why) throw new Error(`rig: ${why}`);
  const old = readState();
  if (old) {
    if (old.owner && old.owner !== process.pid && pidAlive(old.owner) && !old.detached)
      throw new RigBusyError(`rig: another run (pid ${old.owner}) has the rig up; wait for it or run \`node bench/rig/rig.mjs down\``);
    if (old.detached && old.pids && Object.values(old.pids).some(pidAlive))
      throw new RigBusyError('rig: a rig started with `rig.mjs up` is still up; run `node bench/rig/rig.mjs down` first');
    log('rig: removing what an earlier run left behind');
    teardown(old, { log });
  }
  const rateBits = parseRate(rate);
  const dir = RIG_DIR;
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  fs.chmodSync(dir, 0o755); // sessions of the bench users read authorized_keys from here
  for (const n of fs.readdirSync(dir)) if (n !== 'state.json') fs.rmSync(path.join(dir, n), { recursive: true, force: true });
  const st = {
    owner: process.pid,
    detached: false,
    dir,
    loopback,
    rate: loopback ? null : rate,
    rateBits: loopback ? null : rateBits,
    rttMs: loopback ? 0 : rttMs,
    pids: {},
    cgroups: {},
    users: [],
    createdAt: new Date().toISOString(),
  };
  writeState(st);
  const handle = { down: (o) => teardown(readState() ?? st, o) };
  try {
    // Users, one per node, each with a fresh home.
    for (let i = 1; i <= nodes; i++) {
      const pw = ensureUser(`${USER_PREFIX}${i}`);
      st.users.push(pw);
    }
    writeState(st);
    killPidsSync(rigPids({ users: st.users, pids: {} }));
    for (const u of st.users) resetHome(u);

    // `node` and `rsync` must be on the users' PATH.
    const nodeBin = which('node');
    if (!['/usr/bin/node', '/usr/local/bin/node', '/bin/node'].some((p) => fs.existsSync(p))) {
      const target = fs.realpathSync(nodeBin ?? process.execPath);
      fs.symlinkSync(target, '/usr/local/bin/node');
      st.nodeSymlink = { link: '/usr/local/bin/node', target };
      writeState(st);
      log(`rig: linked /usr/local/bin/node -> ${target} for the bench users`);
    }

    // Keys.
    const clientKey = path.join(dir, 'client_ed25519');
    const hostKey = path.join(dir, 'ssh_host_ed25519_key');
    sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'skysync-bench-client', '-f', clientKey]);
    sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', '', '-f', hostKey]);
    const authKeys = path.join(dir, 'authorized_keys');
    fs.writeFileSync(authKeys, fs.readFileSync(`${clientKey}.pub`), { mode: 0o644 });

    // The link.
    let sshHost = '127.0.0.1';
    let sshPort;
    if (!loopback) {
      sh('ip', ['netns', 'add', NETNS]);
      st.netns = NETNS;
      writeState(st);
      sh('ip', ['link', 'add', VETH_CLIENT, 'type', 'veth', 'peer', 'name', VETH_SERVER, 'netns', NETNS]);
      st.veth = VETH_CLIENT;
      writeState(st);
      sh('ip', ['addr', 'add', `${CLIENT_IP}/24`, 'dev', VETH_CLIENT]);
      sh('ip', ['link', 'set', VETH_CLIENT, 'up']);
      const nsx = (...a) => sh('ip', ['netns', 'exec', NETNS, ...a]);
      nsx('ip', 'link', 'set', 'lo', 'up');
      nsx('ip', 'addr', 'add', `${SERVER_IP}/24`, 'dev', VETH_SERVER);
      nsx('ip', 'link', 'set', VETH_SERVER, 'up');
      // One segment per packet, as on a real link: a veth passes GSO super-packets whole, so tbf and the counters
      // would see one header per up-to-64 KiB write and favour tools that write in larger pieces.
      sh('ip', ['link', 'set', 'dev', VETH_CLIENT, 'gso_max_segs', '1']);
      nsx('ip', 'link', 'set', 'dev', VETH_SERVER, 'gso_max_segs', '1');
      const t = tbfParams(rateBits);
      const tbf = ['root', 'tbf', 'rate', t.rate, 'burst', String(t.burst), 'latency', `${t.latencyMs}ms`];
      sh('tc', ['qdisc', 'add', 'dev', VETH_CLIENT, ...tbf]);
      nsx('tc', 'qdisc', 'add', 'dev', VETH_SERVER, ...tbf);
      st.tbf = t;
      sshHost = SERVER_IP;
      sshPort = SSH_PORT;
    } else {
      sshPort = await freePort();
    }
    st.iface = loopback ? 'lo' : VETH_CLIENT;

    // CPU accounting.
    const cgSshd = makeCgroup(CGROUP_NAMES.sshd);
    const cgProxy = loopback ? null : makeCgroup(CGROUP_NAMES.proxy);
    if (cgSshd) st.cgroups.sshd = cgSshd;
    if (cgProxy) st.cgroups.proxy = cgProxy;
    writeState(st);

    // sshd.
    fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    const sshdCfg = path.join(dir, 'sshd_config');
    fs.writeFileSync(
      sshdCfg,
      [
        `Port ${sshPort}`,
        `ListenAddress ${sshHost}`,
        `HostKey ${hostKey}`,
        `PidFile ${path.join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${authKeys}`,
        `AllowUsers ${st.users.map((u) => u.user).join(' ')}`,
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'PermitRootLogin no',
        'PrintMotd no',
        'PrintLastLog no',
        'X11Forwarding no',
        'AllowTcpForwarding yes',
        'UseDNS no',
        'MaxStartups 128:30:256',
        'MaxSessions 64',
        'LogLevel ERROR',
        'Subsystem sftp internal-sftp',
        '',
      ].join('\n'),
    );
    const sshdArgs = [SSHD, '-D', '-e', '-f', sshdCfg];
    const sshdLog = path.join(dir, 'sshd.log');
    const sshd = loopback ? spawnDetached(SSHD, sshdArgs.slice(1), sshdLog) : spawnDetached('ip', ['netns', 'exec', NETNS, ...sshdArgs], sshdLog);
    st.pids.sshd = sshd.child.pid;
    writeState(st);
    // `ip netns exec` execs sshd in place: same pid. Into the cgroup before the first connection.
    st.serverCpu = moveToCgroup(cgSshd, sshd.child.pid) ? 'cgroup' : null;
    await waitForSsh(sshHost, sshPort, sshd.dead);

    // The delay proxy.
    let entryPort = sshPort;
    if (!loopback) {
      const portFile = path.join(dir, 'proxy.port');
      const proxyLog = path.join(dir, 'proxy.log');
      const proxy = spawnDetached(
        process.execPath,
        [path.join(HERE, 'delay-proxy.mjs'), '--listen', '127.0.0.1:0', '--target', `${sshHost}:${sshPort}`, '--delay-ms', String(rttMs / 2), '--port-file', portFile],
        proxyLog,
      );
      st.pids.proxy = proxy.child.pid;
      writeState(st);
      moveToCgroup(cgProxy, proxy.child.pid);
      const deadline = Date.now() + 10_000;
      while (!fs.existsSync(portFile)) {
        if (proxy.dead()) throw new Error(proxy.dead());
        if (Date.now() > deadline) throw new Error('delay proxy did not start');
        await sleep(20);
      }
      entryPort = Number(fs.readFileSync(portFile, 'utf8').trim());
      await waitForSsh('127.0.0.1', entryPort, proxy.dead);
    }

    // The client's ssh config, in SkyPilot's shape.
    const sshConfig = path.join(dir, 'ssh_config');
    const nodeList = st.users.map((u, i) => ({ alias: i === 0 ? CLUSTER : `${CLUSTER}-worker${i}`, ...u }));
    const hostBlock = (n) =>
      [
        `# skysync shaped-link bench: ${n.alias === CLUSTER ? 'head' : 'worker'} node`,
        `Host ${n.alias}`,
        '  HostName 127.0.0.1',
        `  Port ${entryPort}`,
        `  User ${n.user}`,
        `  IdentityFile ${clientKey}`,
        '  IdentitiesOnly yes',
        '  StrictHostKeyChecking no',
        '  UserKnownHostsFile=/dev/null',
        '  GlobalKnownHostsFile=/dev/null',
        '  BatchMode yes',
        '  LogLevel ERROR',
        '',
      ].join('\n');
    fs.writeFileSync(sshConfig, nodeList.map(hostBlock).join('\n'), { mode: 0o644 });
    // The same head alone: a single-node cluster (`push bench` then means the head only, for every CLI version).
    const sshConfigHead = path.join(dir, 'ssh_config.1node');
    fs.writeFileSync(sshConfigHead, hostBlock(nodeList[0]), { mode: 0o644 });
    st.sshConfig = sshConfig;
    st.sshConfigHead = sshConfigHead;
    st.entryPort = entryPort;
    st.nodes = nodeList;
    writeState(st);

    // Every node answers, and has node and rsync.
    for (const n of nodeList) {
      const r = sh('ssh', ['-F', sshConfig, n.alias, 'command -v node && node --version && command -v rsync'], { allowFail: true });
      if (r.status !== 0)
        throw new Error(
          `rig: ${n.alias} (${n.user}) lacks node or rsync, or refused the login: ${r.stdout}${r.stderr}\nsshd log: ${fs.readFileSync(sshdLog, 'utf8').slice(-2000)}`,
        );
      const ver = /v(\d+)/.exec(r.stdout);
      if (!ver || Number(ver[1]) < 18) throw new Error(`rig: ${n.alias} has node ${r.stdout.trim()}, need >= 18`);
      st.remoteTools = r.stdout.trim().split('\n');
    }
    // Round trips as a session sees them: `ssh true`, median of 3.
    const t = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      sh('ssh', ['-F', sshConfig, CLUSTER, 'true']);
      t.push(performance.now() - t0);
    }
    st.sshTrueMs = t.sort((a, b) => a - b)[1];
    writeState(st);

    Object.assign(handle, {
      sshConfig,
      sshConfigHead,
      nodes: nodeList,
      iface: st.iface,
      state: st,
      counters: () => readCounters(st.iface),
      cpu: () => ({ server: readCgroupUsec(st.cgroups.sshd), proxy: readCgroupUsec(st.cgroups.proxy) }),
      info: {
        mode: loopback ? 'loopback' : 'netns+veth+tbf+delay-proxy',
        rate: st.rate,
        rateBits: st.rateBits,
        rttMs: st.rttMs,
        tbf: st.tbf ?? null,
        iface: st.iface,
        serverCpu: st.serverCpu ? `cgroup ${st.cgroups.sshd.kind} ${st.cgroups.sshd.dir}` : null,
        sshTrueMs: st.sshTrueMs,
        remoteTools: st.remoteTools,
        nodes: nodeList.map((n) => ({ alias: n.alias, user: n.user, home: n.home })),
      },
    });
    return handle;
  } catch (e) {
    teardown(readState() ?? st, { log });
    throw e;
  }
}

export function readCounters(iface) {
  const rd = (k) => Number(fs.readFileSync(`/sys/class/net/${iface}/statistics/${k}`, 'utf8').trim());
  return { tx: rd('tx_bytes'), rx: rd('rx_bytes') };
}

// ---- CLI ----

async function main(argv) {
  const [cmd, ...rest] = argv;
  const o = { rate: '100mbit', rtt: 20, loopback: false, nodes: 4, wipe: false, force: false };
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    const [k, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const v = () => inline ?? rest[++i];
    if (k === '--rate') o.rate = v();
    else if (k === '--rtt') o.rtt = Number(v());
    else if (k === '--nodes') o.nodes = Number(v());
    else if (k === '--loopback') o.loopback = true;
    else if (k === '--wipe') o.wipe = true;
    else if (k === '--force') o.force = true;
    else throw new Error(`unknown argument ${a}`);
  }
  const log = (m) => process.stderr.write(`${m}\n`);
  if (cmd === 'up') {
    const rig = await up({ rate: o.rate, rttMs: o.rtt, loopback: o.loopback, nodes: o.nodes, log });
    const st = readState();
    st.detached = true; // owned by nobody: `down` removes it
    st.owner = null;
    writeState(st);
    process.stdout.write(
      `rig up (${rig.info.mode}${o.loopback ? '' : `, ${o.rate} each way, ${o.rtt} ms RTT`}); ssh true takes ${rig.info.sshTrueMs.toFixed(0)} ms\n` +
        `ssh config: ${rig.sshConfig}  (hosts: ${rig.nodes.map((n) => n.alias).join(', ')}); the head alone: ${rig.sshConfigHead}\n` +
        `try: ssh -F ${rig.sshConfig} ${CLUSTER} true\n` +
        `     node packages/cli/dist/bin.js -F ${rig.sshConfig} push ${CLUSTER} -w DIR --json\n` +
        `tear down: node bench/rig/rig.mjs down [--wipe]\n`,
    );
  } else if (cmd === 'down') {
    const st = readState();
    if (st && !st.detached && st.owner && pidAlive(st.owner) && !o.force) {
      // A benchmark run (not `rig.mjs up`) is using it: tearing it down would break that run.
      throw new RigBusyError(`rig: in use by a running benchmark (pid ${st.owner}); not touching it (--force to tear it down anyway)`);
    }
    if (!st) {
      log('rig: nothing is up');
      if (o.wipe) wipeHomes(o.nodes);
      return;
    }
    teardown(st, { wipe: o.wipe, log });
    if (o.wipe) wipeHomes(o.nodes);
    log('rig: down');
  } else if (cmd === 'status') {
    const st = readState();
    if (!st) process.stdout.write('no rig\n');
    else process.stdout.write(JSON.stringify({ ...st, alive: Object.fromEntries(Object.entries(st.pids ?? {}).map(([k, p]) => [k, pidAlive(p)])) }, null, 2) + '\n');
  } else {
    process.stderr.write('usage: node bench/rig/rig.mjs up [--rate 100mbit] [--rtt 20] [--loopback] [--nodes 4] | down [--wipe] [--force] | status\n');
    process.exitCode = 2;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`${e.message}\n`);
    process.exitCode = e instanceof RigBusyError ? 75 : 1;
  });
}
