// The FUSE tool on the node: rclone, started detached (it outlives the agent and the SSH session) with its remote
// described by environment variables, credentials included, so nothing secret is in its arguments (seen by every
// user in `ps`) or in a file. Its control server (rc) listens on 127.0.0.1 behind a password only this user can read.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { FuseMountSpec } from '@skysync/protocol';
import { mountAt } from './mountinfo.js';
import { cacheDir, logFile, mountDir } from './records.js';

/** The remote's name in rclone's environment configuration (RCLONE_CONFIG_SKYSYNC_*). */
const REMOTE = 'skysync';
export const RC_USER = 'skysync';

/** rclone on this node: the one skysync provided, else the system's. */
export function findRclone(home: string): string | null {
  const own = path.join(home, '.skysync', 'bin', 'rclone');
  if (fs.existsSync(own)) return own;
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    const p = path.join(dir || '.', 'rclone');
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

/** Why FUSE cannot be used here, or null when it can. */
export function fuseProblem(): string | null {
  try {
    fs.accessSync('/dev/fuse', fs.constants.R_OK | fs.constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'there is no /dev/fuse (FUSE is not available, as in an unprivileged container)' : `/dev/fuse cannot be opened (${code})`;
  }
  if (process.getuid?.() !== 0 && !hasCommand('fusermount3') && !hasCommand('fusermount')) return 'there is no fusermount (install fuse3) to mount as a non-root user';
  return null;
}

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no free port'))));
    });
  });
}

/** rclone's environment for a mount: the remote's settings, its credentials, the control password. */
export function rcloneEnv(spec: FuseMountSpec, rcPass: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Never let a config file or another remote's settings of this user change what the mount talks to.
  for (const k of Object.keys(env)) if (k.startsWith('RCLONE_')) delete env[k];
  const endpoint = spec.backend.endpoint ?? '';
  // A CA bundle means nothing to a plain-HTTP endpoint, and rclone refuses some that other tools accept.
  if (endpoint.startsWith('http://')) delete env.AWS_CA_BUNDLE;
  for (const [k, v] of Object.entries(spec.backend)) env[`RCLONE_CONFIG_${REMOTE.toUpperCase()}_${k.toUpperCase()}`] = v;
  for (const [k, v] of Object.entries(spec.secrets)) env[k] = v;
  env.RCLONE_RC_USER = RC_USER;
  env.RCLONE_RC_PASS = rcPass;
  return env;
}

export function mountArgs(spec: FuseMountSpec, mountPath: string, home: string, rcPort: number): string[] {
  const cached = spec.mode === 'MOUNT_CACHED';
  return [
    'mount',
    `${REMOTE}:${spec.remotePath}`,
    mountPath,
    // MOUNT keeps only what is being written (appends and random writes need it); MOUNT_CACHED keeps reads too.
    '--vfs-cache-mode',
    cached ? 'full' : 'writes',
    '--cache-dir',
    cacheDir(home, mountPath),
    // A closed file goes up at once under MOUNT (what close-to-open promises), after a second under MOUNT_CACHED
    // (a file rewritten right after is sent once).
    '--vfs-write-back',
    cached ? '1s' : '0s',
    // Other nodes' writes show within this long.
    '--dir-cache-time',
    cached ? '10s' : '5s',
    '--vfs-cache-poll-interval',
    '10s',
    // Uploads in parallel, as `aws s3 sync` does (rclone's default of 4 leaves a job's many small files waiting),
    // and a large file's parts too.
    '--transfers',
    '16',
    '--s3-upload-concurrency',
    '8',
    // Cached files are told apart by size and time, without reading them whole to hash them.
    '--vfs-fast-fingerprint',
    '--rc',
    '--rc-addr',
    `127.0.0.1:${rcPort}`,
    '--log-file',
    logFile(home, mountPath),
    '--log-level',
    'INFO',
  ];
}

/** The names rclone gave this mount's cache in earlier runs that still hold files, other than `current`. */
function leftoverNames(cache: string, current: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(path.join(cache, 'vfs'));
  } catch {
    return [];
  }
  const holdsFiles = (dir: string): boolean => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.isFile() || (e.isDirectory() && holdsFiles(path.join(dir, e.name)))) return true;
    }
    return false;
  };
  return names.filter((n) => n !== current && holdsFiles(path.join(cache, 'vfs', n)));
}

/** Moves what `from` holds into `to`, file by file (a file already at `to` is newer: kept). */
function mergeInto(from: string, to: string): void {
  fs.mkdirSync(to, { recursive: true });
  for (const e of fs.readdirSync(from, { withFileTypes: true })) {
    const a = path.join(from, e.name);
    const b = path.join(to, e.name);
    if (e.isDirectory()) mergeInto(a, b);
    else if (!fs.existsSync(b)) fs.renameSync(a, b);
  }
  fs.rmSync(from, { recursive: true, force: true });
}

/**
 * rclone names its cache after the remote, with a suffix that depends on its settings (credentials included), so
 * a restart with new credentials would not see the writes queued by the last run. Moves them under the name this
 * run uses; they are uploaded once rclone is started on them again. Returns whether anything moved.
 */
function adoptQueuedWrites(cache: string, fsName: string): boolean {
  const name = fsName.slice(0, fsName.indexOf(':') < 0 ? undefined : fsName.indexOf(':'));
  const leftovers = leftoverNames(cache, name);
  for (const old of leftovers) {
    for (const sub of ['vfs', 'vfsMeta']) {
      const from = path.join(cache, sub, old);
      if (fs.existsSync(from)) mergeInto(from, path.join(cache, sub, name));
    }
  }
  return leftovers.length > 0;
}

export interface Started {
  child: ChildProcess;
  rcPort: number;
}

/** Starts rclone on `mountPath` and waits until the kernel shows the mount; rejects with rclone's own last words. */
export async function startRclone(rclone: string, spec: FuseMountSpec, mountPath: string, home: string, rcPass: string): Promise<Started> {
  fs.mkdirSync(mountDir(home, mountPath), { recursive: true, mode: 0o700 });
  const env = rcloneEnv(spec, rcPass);
  const log = logFile(home, mountPath);
  const logSize = (): number => {
    try {
      return fs.statSync(log).size;
    } catch {
      return 0;
    }
  };
  for (let attempt = 0; attempt < 4; attempt++) {
    const rcPort = await freePort();
    const from = logSize();
    const out = fs.openSync(log, 'a', 0o600);
    const child = spawn(rclone, mountArgs(spec, mountPath, home, rcPort), { env, detached: true, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    let exited: number | null | undefined;
    child.once('exit', (code, signal) => (exited = code ?? (signal ? 128 : null)));
    child.once('error', () => (exited = 127));
    const deadline = Date.now() + 20_000;
    let again = false;
    while (exited === undefined && Date.now() < deadline) {
      if (mountAt(mountPath)?.fsType.startsWith('fuse.rclone')) {
        const fsName = await rc<{ fs?: string }>(rcPort, rcPass, 'vfs/stats')
          .then((r) => r.fs ?? '')
          .catch(() => '');
        if (attempt < 2 && fsName && adoptQueuedWrites(cacheDir(home, mountPath), fsName)) {
          // Moved under this run's name: a new start finds them queued.
          unmountPath(mountPath, false);
          child.kill('SIGTERM');
          const deadline = setTimeout(() => child.kill('SIGKILL'), 10_000);
          if (exited === undefined) await new Promise((r) => child.once('exit', r));
          clearTimeout(deadline);
          again = true;
          break;
        }
        // It outlives this process from here on.
        child.unref();
        return { child, rcPort };
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (again) continue;
    if (exited === undefined) child.kill('SIGKILL');
    const said = lastError(log, from);
    if (attempt === 0 && /address already in use/i.test(said)) continue;
    throw new Error(`rclone did not mount it${exited !== undefined ? ` (exit ${exited})` : ' within 20 s'}: ${said || 'no message'}`);
  }
  throw new Error('rclone did not mount it after 4 starts');
}

/** The most telling line rclone logged since `from`. */
export function lastError(log: string, from = 0): string {
  let text = '';
  try {
    const fd = fs.openSync(log, 'r');
    const size = fs.fstatSync(fd).size;
    const start = Math.max(from, size - 16384);
    const buf = Buffer.alloc(size - start);
    fs.readSync(fd, buf, 0, buf.length, start);
    fs.closeSync(fd);
    text = buf.toString('utf8');
  } catch {
    return '';
  }
  const lines = text.split('\n').filter(Boolean);
  const bad = lines.filter((l) => /ERROR|CRITICAL|Fatal|failed/i.test(l));
  const line = (bad.pop() ?? lines.pop() ?? '').replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d /, '');
  return line.slice(0, 300);
}

/** One call to a mount's rclone control server. */
export async function rc<T>(port: number, pass: string, method: string, params: Record<string, unknown> = {}): Promise<T> {
  const res = await fetch(`http://127.0.0.1:${port}/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${RC_USER}:${pass}`).toString('base64')}` },
    body: JSON.stringify(params),
    signal: AbortSignal.timeout(10_000),
  });
  const body = (await res.json()) as T & { error?: string };
  if (!res.ok) throw new Error(`rclone ${method}: ${body.error ?? res.status}`);
  return body;
}

export function unmountPath(mountPath: string, lazy: boolean): { ok: boolean; error: string } {
  const tools = process.getuid?.() === 0 ? [['umount', lazy ? ['-l', mountPath] : [mountPath]]] : [];
  tools.push(['fusermount3', ['-u', ...(lazy ? ['-z'] : []), mountPath]], ['fusermount', ['-u', ...(lazy ? ['-z'] : []), mountPath]]);
  let error = '';
  for (const [cmd, args] of tools as Array<[string, string[]]>) {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status === 0) return { ok: true, error: '' };
    if (r.error) continue;
    error = (r.stderr || '').trim().split('\n').pop() ?? `exit ${r.status}`;
  }
  return { ok: false, error: error || 'no umount or fusermount worked' };
}
