// Real OpenSSH servers for end-to-end tests: one sshd per "node", each on 127.0.0.1 and its own high port, each
// logging in as its own Unix user (so every node has its own home), with its own host key. The client side gets
// one key pair, an ssh_config in SkyPilot's shape (`sky-test` head, `sky-test-worker1..`) and a known_hosts file.
//
// Needs root (useradd, sshd's privilege separation). `sshSkipReason()` says why it cannot run here, if it cannot.
//
// How `noNode` / `noRsync` work: the node's sshd is started inside its own mount namespace (`unshare --mount`)
// in which the PATH directories holding the binary get a read-only overlay with a whiteout for it. Every session
// of that sshd inherits the namespace, so the binary is gone for login and non-login shells alike, whatever PATH
// they set (Debian's /etc/profile resets PATH for login shells, which defeats SetEnv/~/.ssh/environment tricks),
// `command -v node` fails and running it gives bash's "command not found" (127). Nothing is changed on the host
// and the mounts vanish with the namespace when the sshd and its sessions end. If overlayfs cannot be mounted,
// it falls back to bind-mounting an empty non-executable file over the binary (then running it fails with 126).

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';

export interface SshNode {
  /** The ssh_config alias: `sky-test` for the head, `sky-test-workerN` for workers. */
  name: string;
  user: string;
  home: string;
  port: number;
  /** The host's public key line, `type base64` (no comment). */
  hostKeyPub: string;
  /** The host's private key file (the public one is next to it, with `.pub`). */
  hostKeyFile: string;
}

export interface SshCluster {
  nodes: SshNode[];
  /** The client's private key (ed25519, no passphrase); authorized on every node. */
  clientKey: string;
  /** An ssh_config with one Host block per node. */
  sshConfig: string;
  /** known_hosts lines `[127.0.0.1]:port key` for every node (plain, not hashed). */
  knownHosts: string;
  /** The harness's working directory (configs, keys, logs). */
  dir: string;
  /** What sshd wrote to stderr so far, per node. */
  logs(): string[];
  stop(): Promise<void>;
}

export interface StartNodesOptions {
  /** Cluster name for the aliases (default `sky-test`). */
  cluster?: string;
  /** Printed on stdout by the user's ~/.bashrc and ~/.profile, before anything else the shell does. */
  loginBanner?: string;
  /** Make `node` unavailable to the nodes' users: all nodes (true) or those at the given 0-based indices. */
  noNode?: boolean | number[];
  /** Same for `rsync`. */
  noRsync?: boolean | number[];
  /** Host key type for every node (default ed25519). */
  hostKeyType?: 'ed25519' | 'rsa' | 'ecdsa';
  /** StrictHostKeyChecking in the generated config (default `yes`, with the generated known_hosts). */
  strictHostKeyChecking?: 'yes' | 'no' | 'accept-new';
  /** Extra sshd_config lines for every node (for example `AllowStreamLocalForwarding no`). */
  sshdConfig?: string[];
}

/** How one Host block reaches a node. */
export interface HostBlockOptions {
  /** StrictHostKeyChecking: `no` (default) with no known_hosts file, as SkyPilot's generated config has it. */
  strict?: 'yes' | 'no' | 'accept-new';
  /** The known_hosts file (needed unless `strict` is `no`; without it, none: `/dev/null`). */
  knownHosts?: string;
  /** More options for the block, one per line (`ServerAliveInterval 5`, `ProxyJump head`). */
  extra?: string[];
}

/**
 * One Host block of an ssh_config, in the shape SkyPilot generates for a cluster's node: `alias` reaches the
 * node's sshd on 127.0.0.1 as its user with the harness's client key, and only that key.
 */
export function hostBlock(alias: string, node: Pick<SshNode, 'user' | 'port'>, clientKey: string, opts: HostBlockOptions = {}): string {
  const strict = opts.strict ?? 'no';
  if (strict !== 'no' && !opts.knownHosts) throw new Error(`hostBlock ${alias}: StrictHostKeyChecking ${strict} needs a known_hosts file`);
  return [
    `Host ${alias}`,
    '  HostName 127.0.0.1',
    `  User ${node.user}`,
    `  Port ${node.port}`,
    `  IdentityFile ${clientKey}`,
    '  IdentitiesOnly yes',
    `  StrictHostKeyChecking ${strict}`,
    opts.knownHosts ? `  UserKnownHostsFile ${opts.knownHosts}` : '  UserKnownHostsFile=/dev/null',
    ...(opts.extra ?? []).map((l) => `  ${l}`),
    '',
  ].join('\n');
}

/** The blocks SkyPilot would generate for a cluster: `name` for the first node (the head), `name-workerN` for the rest. */
export function clusterHostBlocks(name: string, nodes: Array<Pick<SshNode, 'user' | 'port'>>, clientKey: string, opts: HostBlockOptions = {}): string {
  return nodes.map((n, i) => hostBlock(i ? `${name}-worker${i}` : name, n, clientKey, opts)).join('\n');
}

/**
 * SkyPilot's layout: the cluster's blocks in a generated file of their own (`DIR/generated/NAME`), included from
 * the main config (`DIR/ssh_config`, returned), which ends with a `Host *` block of `common` options.
 */
export function writeSkyPilotConfig(dir: string, name: string, cluster: Pick<SshCluster, 'nodes' | 'clientKey'>, opts: HostBlockOptions & { common?: string[] } = {}): string {
  const gen = path.join(dir, 'generated');
  fs.mkdirSync(gen, { recursive: true });
  fs.writeFileSync(path.join(gen, name), clusterHostBlocks(name, cluster.nodes, cluster.clientKey, opts));
  const cfg = path.join(dir, 'ssh_config');
  const common = (opts.common ?? []).map((l) => `  ${l}\n`).join('');
  fs.writeFileSync(cfg, `Include ${gen}/*\n` + (common ? `\nHost *\n${common}` : ''));
  return cfg;
}

const SSHD = '/usr/sbin/sshd';
const LOCK_DIR = path.join(os.tmpdir(), 'skysync-sshd-harness-locks');
const USER_PREFIX = 'skysync-n';
/** The PATH directories sshd gives sessions plus the ones a login shell adds (Debian). */
const PATH_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/games', '/usr/local/games'];

function which(cmd: string): string | null {
  for (const d of (process.env.PATH ?? '').split(':').concat(PATH_DIRS)) {
    if (!d) continue;
    const p = path.join(d, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return null;
}

/** Why the harness cannot run on this machine, or null when it can. */
export function sshSkipReason(): string | null {
  if (process.platform !== 'linux') return `sshd harness: needs Linux, this is ${process.platform}`;
  if (process.getuid?.() !== 0) return 'sshd harness: needs root (useradd, sshd privilege separation)';
  if (!fs.existsSync(SSHD)) return `sshd harness: ${SSHD} missing (apt-get install -y openssh-server)`;
  for (const t of ['ssh', 'ssh-keygen', 'useradd']) if (!which(t)) return `sshd harness: \`${t}\` missing (apt-get install -y openssh-client passwd)`;
  return null;
}

function run(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// ---- user slots: one Unix user per node, taken under a lock so concurrent test files never share one ----

function tryLock(user: string): boolean {
  fs.mkdirSync(LOCK_DIR, { recursive: true, mode: 0o700 });
  const file = path.join(LOCK_DIR, `${user}.lock`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const owner = Number.parseInt(fs.readFileSync(file, 'utf8'), 10);
      if (Number.isFinite(owner) && owner > 0 && pidAlive(owner)) return false;
      fs.rmSync(file, { force: true }); // stale: its process is gone
    }
  }
  return false;
}

function unlock(user: string): void {
  const file = path.join(LOCK_DIR, `${user}.lock`);
  try {
    if (fs.readFileSync(file, 'utf8') === String(process.pid)) fs.rmSync(file, { force: true });
  } catch {
    /* already gone */
  }
}

interface PwEntry {
  uid: number;
  gid: number;
  home: string;
}

function getpw(user: string): PwEntry | null {
  for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === user && f.length >= 7) return { uid: Number(f[2]), gid: Number(f[3]), home: f[5]! };
  }
  return null;
}

/** Creates the user if missing and makes sure sshd (UsePAM no) will let it in. */
async function ensureUser(user: string): Promise<PwEntry> {
  let pw = getpw(user);
  for (let attempt = 0; !pw; attempt++) {
    try {
      // `-p '*'`: no password, but not *locked*. useradd's default '!' makes sshd without PAM refuse the
      // account ("User ... not allowed because account is locked") even for public-key logins.
      run('useradd', ['-m', '-s', '/bin/bash', '-p', '*', user]);
    } catch (e) {
      if (attempt >= 20) throw e;
      await sleep(100 + Math.random() * 200); // /etc/passwd locked by a concurrent useradd
    }
    pw = getpw(user);
  }
  const shadow = fs
    .readFileSync('/etc/shadow', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${user}:`));
  if (shadow?.split(':')[1]?.startsWith('!')) run('usermod', ['-p', '*', user]);
  const shell = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${user}:`))
    ?.split(':')[6];
  if (shell !== '/bin/bash') run('usermod', ['-s', '/bin/bash', user]);
  return pw;
}

function chownR(p: string, uid: number, gid: number): void {
  fs.lchownSync(p, uid, gid);
  const st = fs.lstatSync(p);
  if (st.isDirectory()) for (const n of fs.readdirSync(p)) chownR(path.join(p, n), uid, gid);
}

/** Empties the home and refills it from /etc/skel. */
function resetHome(pw: PwEntry): void {
  if (!pw.home.startsWith('/home/') && !pw.home.includes(USER_PREFIX)) throw new Error(`refusing to wipe ${pw.home}`);
  fs.rmSync(pw.home, { recursive: true, force: true });
  fs.mkdirSync(pw.home, { recursive: true, mode: 0o755 });
  if (fs.existsSync('/etc/skel')) fs.cpSync('/etc/skel', pw.home, { recursive: true });
  chownR(pw.home, pw.uid, pw.gid);
  fs.chmodSync(pw.home, 0o755);
}

// ---- processes ----

function procStat(pid: number): { ppid: number; uid: number } | null {
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

/** The pids to end for a node: its sshd, every descendant, and anything still running as its user. */
function nodePids(sshdPid: number | undefined, uid: number): number[] {
  const all = new Map<number, { ppid: number; uid: number }>();
  for (const n of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    const s = procStat(Number(n));
    if (s) all.set(Number(n), s);
  }
  const out = new Set<number>();
  if (sshdPid !== undefined && all.has(sshdPid)) out.add(sshdPid);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, s] of all) {
      if (out.has(pid) || !out.has(s.ppid)) continue;
      out.add(pid);
      grew = true;
    }
  }
  for (const [pid, s] of all) if (s.uid === uid && pid !== process.pid) out.add(pid);
  return [...out];
}

async function killAll(pids: number[]): Promise<void> {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline && pids.some(pidAlive)) await sleep(25);
  for (const p of pids.filter(pidAlive)) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/** Resolves once something on the port answers with an SSH banner; rejects if `dead()` says sshd is gone. */
async function waitForSsh(port: number, dead: () => string | null, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const why = dead();
    if (why) throw new Error(why);
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      let buf = '';
      const done = (v: boolean): void => {
        sock.destroy();
        resolve(v);
      };
      sock.setTimeout(2000, () => done(false));
      sock.on('data', (d) => {
        buf += d.toString('latin1');
        if (buf.includes('\n')) done(buf.startsWith('SSH-2.0-'));
      });
      sock.on('error', () => done(false));
      sock.on('close', () => done(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`sshd on port ${port} did not answer within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** The shell script that hides binaries inside the sshd's private mount namespace, then execs sshd. */
function hideScript(hide: string[], work: string, sshdArgs: string[]): string {
  const lines = ['set -e'];
  const byDir = new Map<string, string[]>();
  const seen = new Set<string>();
  for (const d of PATH_DIRS) {
    let real: string;
    try {
      real = fs.realpathSync(d);
    } catch {
      continue;
    }
    if (seen.has(real)) continue;
    seen.add(real);
    for (const b of hide) {
      if (fs.existsSync(path.join(real, b)) || isSymlink(path.join(real, b))) byDir.set(real, [...(byDir.get(real) ?? []), b]);
    }
  }
  let i = 0;
  for (const [dir, bins] of byDir) {
    const wh = path.join(work, `whiteout${i}`);
    const empty = path.join(work, `empty${i++}`);
    fs.mkdirSync(wh, { recursive: true });
    fs.writeFileSync(empty, '', { mode: 0o644 });
    const whiteouts = bins.map((b) => `mknod ${shq(path.join(wh, b))} c 0 0`).join(' && ');
    const binds = bins.map((b) => `mount --bind ${shq(empty)} ${shq(path.join(dir, b))}`).join(' && ');
    lines.push(`if ! { ${whiteouts} && mount -t overlay overlay -o ${shq(`lowerdir=${wh}:${dir}`)} ${shq(dir)}; } 2>/dev/null; then ${binds}; fi`);
  }
  lines.push(`exec ${sshdArgs.map(shq).join(' ')}`);
  return lines.join('\n');
}

function isSymlink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

function pick(v: boolean | number[] | undefined, i: number): boolean {
  return v === true || (Array.isArray(v) && v.includes(i));
}

function bannerSnippet(banner: string): string {
  return [
    '# skysync test harness: a chatty shell that prints before anything else',
    'if [ -z "${SKYSYNC_HARNESS_BANNER_SHOWN:-}" ]; then',
    '  SKYSYNC_HARNESS_BANNER_SHOWN=1',
    `  printf '%s\\n' ${shq(banner)}`,
    'fi',
    '',
  ].join('\n');
}

function prepend(file: string, text: string, uid: number, gid: number): void {
  const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  fs.writeFileSync(file, text + old);
  fs.chownSync(file, uid, gid);
}

export interface ClaimedUser {
  user: string;
  uid: number;
  gid: number;
  home: string;
  release(): void;
}

/**
 * A Unix user of this test run's own (`<prefix>1`, `<prefix>2`, ... whichever is free), whose passwd home is
 * `home`: for running OpenSSH tools as someone whose `~` is a temporary directory (ssh reads ~/.ssh/config
 * and expands `~` from the passwd database, never from $HOME). The user is created without a home directory
 * if missing and is kept afterwards; release() frees the slot.
 */
export async function claimUser(prefix: string, home: string): Promise<ClaimedUser> {
  for (let k = 1; k <= 50; k++) {
    const user = `${prefix}${k}`;
    if (!tryLock(user)) continue;
    try {
      let pw = getpw(user);
      for (let attempt = 0; !pw; attempt++) {
        try {
          run('useradd', ['-M', '-d', home, '-s', '/bin/sh', '-p', '*', user]);
        } catch (e) {
          if (attempt >= 20) throw e;
          await sleep(100 + Math.random() * 200);
        }
        pw = getpw(user);
      }
      if (pw.home !== home) {
        run('usermod', ['-d', home, user]);
        pw = getpw(user)!;
      }
      return { user, uid: pw.uid, gid: pw.gid, home, release: () => unlock(user) };
    } catch (e) {
      unlock(user);
      throw e;
    }
  }
  throw new Error(`claimUser: no free slot for ${prefix}1..50`);
}

const live = new Set<() => void>();
let exitHooked = false;

export async function startNodes(n: number, opts: StartNodesOptions = {}): Promise<SshCluster> {
  const why = sshSkipReason();
  if (why) throw new Error(why);
  if (!Number.isInteger(n) || n < 1) throw new Error(`startNodes: n must be >= 1, got ${n}`);
  const cluster = opts.cluster ?? 'sky-test';
  fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // sshd's privilege separation directory

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-sshd-'));
  fs.chmodSync(dir, 0o755); // the users' sshd children read authorized_keys from here with their own uid

  // Claim n user slots.
  const users: string[] = [];
  const procs: Array<ChildProcess | undefined> = [];
  const logs: string[] = [];
  const pws: PwEntry[] = [];
  let stopped = false;

  const syncCleanup = (): void => {
    // Last resort on process exit: no awaiting possible.
    for (const [i, pw] of pws.entries()) {
      for (const p of nodePids(procs[i]?.pid, pw.uid)) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    for (const u of users) unlock(u);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  live.add(syncCleanup);
  if (!exitHooked) {
    exitHooked = true;
    process.once('exit', () => {
      for (const f of live) f();
    });
  }

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    live.delete(syncCleanup);
    const pids = pws.flatMap((pw, i) => nodePids(procs[i]?.pid, pw.uid));
    await killAll(pids);
    for (const pw of pws) {
      try {
        resetHome(pw);
      } catch {
        /* best effort */
      }
    }
    for (const u of users) unlock(u);
    fs.rmSync(dir, { recursive: true, force: true });
  };

  try {
    for (let k = 1; users.length < n; k++) {
      if (k > 200) throw new Error('startNodes: no free user slot (skysync-n1..200 all locked)');
      const u = `${USER_PREFIX}${k}`;
      if (tryLock(u)) users.push(u);
    }

    const clientKey = path.join(dir, 'client_ed25519');
    run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'skysync-test-client', '-f', clientKey]);
    const clientPub = fs.readFileSync(`${clientKey}.pub`, 'utf8');
    const keyType = opts.hostKeyType ?? 'ed25519';

    const nodes: SshNode[] = [];
    for (let i = 0; i < n; i++) {
      const user = users[i]!;
      const pw = await ensureUser(user);
      pws.push(pw);
      // Nothing of a previous run survives: end its processes, then wipe the home.
      await killAll(nodePids(undefined, pw.uid));
      resetHome(pw);
      if (opts.loginBanner !== undefined) {
        const snip = bannerSnippet(opts.loginBanner);
        prepend(path.join(pw.home, '.bashrc'), snip, pw.uid, pw.gid);
        prepend(path.join(pw.home, '.profile'), snip, pw.uid, pw.gid);
      }

      const nd = path.join(dir, `n${i + 1}`);
      fs.mkdirSync(nd, { mode: 0o755 });
      const hostKeyFile = path.join(nd, `ssh_host_${keyType}_key`);
      const bits = keyType === 'rsa' ? ['-b', '3072'] : [];
      run('ssh-keygen', ['-q', '-t', keyType, ...bits, '-N', '', '-C', '', '-f', hostKeyFile]);
      const hostKeyPub = fs.readFileSync(`${hostKeyFile}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
      const authKeys = path.join(nd, 'authorized_keys');
      fs.writeFileSync(authKeys, clientPub, { mode: 0o644 });
      const hide = [...(pick(opts.noNode, i) ? ['node', 'nodejs'] : []), ...(pick(opts.noRsync, i) ? ['rsync'] : [])];

      let port = 0;
      let child: ChildProcess | undefined;
      const logFile = path.join(nd, 'sshd.log');
      for (let attempt = 0; ; attempt++) {
        port = await freePort();
        const cfg = path.join(nd, 'sshd_config');
        fs.writeFileSync(
          cfg,
          [
            `Port ${port}`,
            'ListenAddress 127.0.0.1',
            `HostKey ${hostKeyFile}`,
            `PidFile ${path.join(nd, 'sshd.pid')}`,
            `AuthorizedKeysFile ${authKeys}`,
            `AllowUsers ${user}`,
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
            'MaxStartups 64:30:128',
            'MaxSessions 64',
            'LogLevel INFO',
            'Subsystem sftp internal-sftp',
            ...(opts.sshdConfig ?? []),
            '',
          ].join('\n'),
        );
        const sshdArgs = [SSHD, '-D', '-e', '-f', cfg];
        const script = hide.length ? hideScript(hide, nd, sshdArgs) : null;
        fs.writeFileSync(logFile, '');
        const out = fs.openSync(logFile, 'a');
        child = script
          ? spawn('unshare', ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', script], { stdio: ['ignore', out, out] })
          : spawn(SSHD, sshdArgs.slice(1), { stdio: ['ignore', out, out] });
        fs.closeSync(out);
        procs[i] = child;
        let exited: string | null = null;
        child.once('exit', (code, sig) => (exited = `sshd for ${user} exited (${code ?? sig}): ${fs.readFileSync(logFile, 'utf8').trim()}`));
        child.once('error', (e) => (exited = `sshd for ${user} failed to start: ${e.message}`));
        try {
          await waitForSsh(port, () => exited);
          break;
        } catch (e) {
          const msg = (e as Error).message;
          if (child.exitCode === null) child.kill('SIGKILL');
          // Someone took the port between freePort() and sshd's bind: try another.
          if (attempt < 4 && /Bind to port|Address already in use|Cannot bind/i.test(msg)) continue;
          throw e;
        }
      }
      logs[i] = logFile;
      nodes.push({ name: i === 0 ? cluster : `${cluster}-worker${i}`, user, home: pw.home, port, hostKeyPub, hostKeyFile });
    }

    const knownHosts = path.join(dir, 'known_hosts');
    fs.writeFileSync(knownHosts, nodes.map((nd) => `[127.0.0.1]:${nd.port} ${nd.hostKeyPub}\n`).join(''), { mode: 0o600 });
    const sshConfig = path.join(dir, 'ssh_config');
    const strict = opts.strictHostKeyChecking ?? 'yes';
    fs.writeFileSync(
      sshConfig,
      nodes
        .map(
          (nd) =>
            `# Added by the skysync test harness for ${cluster}\n` +
            hostBlock(nd.name, nd, clientKey, {
              strict,
              knownHosts,
              extra: ['GlobalKnownHostsFile /dev/null', 'UpdateHostKeys no', 'BatchMode yes', 'LogLevel ERROR'],
            }),
        )
        .join('\n'),
      { mode: 0o644 },
    );

    return {
      nodes,
      clientKey,
      sshConfig,
      knownHosts,
      dir,
      logs: () => logs.map((f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '')),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
