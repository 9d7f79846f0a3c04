// OpenSSH known_hosts: checking a server's host key, adding one (accept-new), and what to do about each outcome
// under StrictHostKeyChecking.
//
// Matching follows OpenSSH 9.2 (checked against the real client):
// - The name looked up is `host` for port 22 and `[host]:port` otherwise (with HostKeyAlias: the alias, no port),
//   lowercased. Entries are comma-separated patterns (`*`, `?`, `!negation`, case-insensitive) or one hashed name
//   `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
// - Any plain entry for the name with a different key is a mismatch, whatever its key type: a host known by an
//   RSA key that now offers ED25519 is "changed" to ssh too. A matching key anywhere (any file) wins over that.
//   Of several contradicting entries ssh names the last one ("Offending ... key in file:line"); so does this.
// - `@revoked` entries beat everything; `@cert-authority` entries neither match nor contradict a plain key.

import fs from 'node:fs';
import path from 'node:path';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { matchPattern, type ResolvedHost, type StrictHostKeyChecking } from './ssh-config/index.js';
import { shellQuote } from './shell.js';

export type HostKeyStatus = 'match' | 'mismatch' | 'unknown' | 'revoked';

export interface HostKeyCheck {
  status: HostKeyStatus;
  /** Where: the (first) matching line, the last contradicting line (the one ssh names), or the @revoked line. */
  file?: string;
  line?: number;
  /** For a mismatch: the key type the file has for the host. */
  knownKeyType?: string;
}

export interface HostKeyQuery {
  host: string;
  port: number;
  /** The server's key type (`ssh-ed25519`, `ssh-rsa`, `rsa-sha2-512`, ...); the blob's own type wins. */
  keyType: string;
  /** The raw SSH wire-format public key blob. */
  key: Buffer;
  files: string[];
}

/** The name known_hosts stores for a host and port: `host`, or `[host]:port` when the port is not 22. */
export function knownHostsName(host: string, port: number): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

/** `|1|salt|hash` for a known_hosts name (a fresh 20-byte salt unless given). */
export function hashHostName(name: string, salt: Buffer = randomBytes(20)): string {
  const mac = createHmac('sha1', salt).update(name).digest();
  return `|1|${salt.toString('base64')}|${mac.toString('base64')}`;
}

/** The key type string inside a wire-format public key blob, or null if it is not one. */
export function keyTypeOf(blob: Buffer): string | null {
  if (blob.length < 4) return null;
  const n = blob.readUInt32BE(0);
  if (n === 0 || n > 64 || 4 + n > blob.length) return null;
  const t = blob.subarray(4, 4 + n).toString('latin1');
  return /^[\x21-\x7e]+$/.test(t) ? t : null;
}

/** `SHA256:...` as ssh-keygen -l prints it. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** ED25519, RSA, ECDSA, ... as OpenSSH names key types in messages. */
export function keyTypeLabel(type: string): string {
  const t = type.replace(/-cert-v01@openssh\.com$/, '');
  if (t === 'ssh-ed25519') return 'ED25519';
  if (t === 'sk-ssh-ed25519@openssh.com') return 'ED25519-SK';
  if (t === 'ssh-rsa' || t.startsWith('rsa-sha2-')) return 'RSA';
  if (t.startsWith('ecdsa-sha2-')) return 'ECDSA';
  if (t.startsWith('sk-ecdsa-sha2-')) return 'ECDSA-SK';
  if (t === 'ssh-dss') return 'DSA';
  return t.toUpperCase();
}

/** A known_hosts host field against a lowercased name: hashed, or a pattern list (1 match, 0 none, -1 negated). */
function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith('|')) {
    const m = /^\|1\|([^|]+)\|([^|]+)$/.exec(field);
    if (!m) return false;
    const salt = Buffer.from(m[1]!, 'base64');
    const want = Buffer.from(m[2]!, 'base64');
    const got = createHmac('sha1', salt).update(name).digest();
    return want.length === got.length && want.equals(got);
  }
  let positive = false;
  for (const raw of field.split(',')) {
    const neg = raw.startsWith('!');
    const p = (neg ? raw.slice(1) : raw).toLowerCase();
    if (!p) continue;
    if (matchPattern(name, p)) {
      if (neg) return false;
      positive = true;
    }
  }
  return positive;
}

interface Entry {
  marker: 'none' | 'revoked' | 'ca';
  hosts: string;
  type: string;
  blob: Buffer;
  line: number;
}

function* entries(text: string): Generator<Entry> {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let s = lines[i]!.replace(/\r$/, '').replace(/^[ \t]+/, '');
    if (!s || s.startsWith('#')) continue;
    let marker: Entry['marker'] = 'none';
    if (s.startsWith('@')) {
      const m = /^(@\S+)[ \t]+(.*)$/.exec(s);
      if (!m) continue;
      if (m[1] === '@revoked') marker = 'revoked';
      else if (m[1] === '@cert-authority') marker = 'ca';
      else continue; // unknown marker: OpenSSH ignores the line
      s = m[2]!;
    }
    const f = s.split(/[ \t]+/);
    if (f.length < 3) continue;
    const [hosts, type, b64] = f as [string, string, string];
    if (/^\d+$/.test(type)) continue; // SSH-1 RSA "bits e n" line
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) continue;
    const blob = Buffer.from(b64, 'base64');
    if (keyTypeOf(blob) !== type) continue; // the type field must agree with the key, or ssh rejects the line
    yield { marker, hosts, type, blob, line: i + 1 };
  }
}

function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null; // missing or unreadable: ssh skips it too
  }
}

/** Looks a server's host key up in known_hosts files, in order. */
export function checkHostKey(q: HostKeyQuery): HostKeyCheck {
  const name = knownHostsName(q.host, q.port);
  let match: HostKeyCheck | null = null;
  let mismatch: HostKeyCheck | null = null;
  let revoked: HostKeyCheck | null = null;
  for (const file of q.files) {
    const text = readOrNull(file);
    if (text === null) continue;
    for (const e of entries(text)) {
      if (!hostFieldMatches(e.hosts, name)) continue;
      const same = e.blob.equals(q.key);
      if (e.marker === 'revoked') {
        if (same && !revoked) revoked = { status: 'revoked', file, line: e.line };
      } else if (e.marker === 'none') {
        if (same) match ??= { status: 'match', file, line: e.line };
        else mismatch = { status: 'mismatch', file, line: e.line, knownKeyType: e.type }; // the last one, as ssh reports
      }
      // @cert-authority: only for certificates, which a plain key is not.
    }
  }
  return revoked ?? match ?? mismatch ?? { status: 'unknown' };
}

// ---- adding (accept-new) ----

const chains = new Map<string, Promise<void>>();

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function withFileLock<T>(target: string, fn: () => T): Promise<T> {
  const lock = `${target}.lock`;
  const deadline = Date.now() + 15_000;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    try {
      fs.writeFileSync(lock, String(process.pid), { flag: 'wx', mode: 0o600 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      try {
        if (Date.now() - fs.statSync(lock).mtimeMs > 30_000) fs.rmSync(lock, { force: true }); // stale
      } catch {
        /* gone meanwhile */
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`);
      await sleep(delay);
    }
  }
  try {
    return fn();
  } finally {
    fs.rmSync(lock, { force: true });
  }
}

export interface AppendOptions {
  /** Store the name hashed (`|1|...`), as HashKnownHosts does. Default false. */
  hash?: boolean;
}

/**
 * Adds `host`/`port`'s key to a known_hosts file (a no-op for /dev/null or when the exact key is already there).
 * The file is replaced atomically (write a temporary file, rename), under a lock file so concurrent adders do not
 * lose each other's lines; a symlinked file is updated at its target. A new file is 0600 in a directory created
 * 0700.
 */
export async function appendKnownHost(file: string, host: string, port: number, keyType: string, key: Buffer, opts: AppendOptions = {}): Promise<void> {
  if (file === '/dev/null') return;
  let target = path.resolve(file);
  try {
    target = fs.realpathSync(target);
  } catch {
    /* does not exist yet */
  }
  const prev = chains.get(target) ?? Promise.resolve();
  const next = prev.then(() => appendLocked(target, host, port, keyType, key, opts));
  const settled = next.catch(() => undefined);
  chains.set(target, settled);
  try {
    await next;
  } finally {
    if (chains.get(target) === settled) chains.delete(target);
  }
}

async function appendLocked(target: string, host: string, port: number, keyType: string, key: Buffer, opts: AppendOptions): Promise<void> {
  const dir = path.dirname(target);
  if (!fs.existsSync(dir)) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, 0o700);
  }
  await withFileLock(target, () => {
    let old = '';
    let st: fs.Stats | null = null;
    try {
      st = fs.statSync(target);
      old = fs.readFileSync(target, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (st && checkHostKey({ host, port, keyType, key, files: [target] }).status === 'match') return;
    const name = knownHostsName(host, port);
    const type = keyTypeOf(key) ?? keyType;
    const line = `${opts.hash ? hashHostName(name) : name} ${type} ${key.toString('base64')}\n`;
    const text = old && !old.endsWith('\n') ? `${old}\n${line}` : old + line;
    const tmp = `${target}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    const mode = st ? st.mode & 0o777 : 0o600;
    const fd = fs.openSync(tmp, 'wx', mode);
    try {
      fs.writeSync(fd, text);
      fs.fchmodSync(fd, mode);
      if (st && process.getuid?.() === 0 && (st.uid !== 0 || st.gid !== 0)) fs.fchownSync(fd, st.uid, st.gid);
      fs.fsyncSync(fd);
    } catch (e) {
      fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
      throw e;
    }
    fs.closeSync(fd);
    try {
      fs.renameSync(tmp, target);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw e;
    }
  });
}

// ---- policy ----

/**
 * What to do: `accept` connect; `add` connect and add the key to `addTo`; `refuse` do not connect; `warn` connect
 * anyway but say so loudly, leave the file alone, and use no password/keyboard-interactive authentication and no
 * agent or port forwarding on this connection (what OpenSSH does for a changed key under StrictHostKeyChecking=no).
 */
export type HostKeyAction = 'accept' | 'add' | 'refuse' | 'warn';

export interface HostKeyPolicy {
  strictHostKeyChecking: StrictHostKeyChecking;
  /** The files to check, user files first (pass to checkHostKey). */
  files: string[];
  /** Where a new key goes: the first user known_hosts file; null when that is /dev/null or there is none. */
  addTo: string | null;
  /** Whether to hash what is added (HashKnownHosts). */
  hash: boolean;
  /** The name to look up: HostKeyAlias (port 22, as ssh does) or the hostname and port. */
  lookup: { host: string; port: number };
  match: HostKeyAction;
  unknown: HostKeyAction;
  mismatch: HostKeyAction;
  revoked: HostKeyAction;
  decide(status: HostKeyStatus): HostKeyAction;
}

/**
 * StrictHostKeyChecking as OpenSSH applies it:
 * - yes, and ask (skysync has no prompt): refuse unknown and changed keys;
 * - accept-new: add unknown keys, refuse changed ones;
 * - no/off: add unknown keys (not to /dev/null), and for a changed key connect anyway with restrictions (`warn`),
 *   as ssh_config(5) documents ("allow connections to hosts with changed hostkeys to proceed, subject to some
 *   restrictions") and ssh 9.2 does: it disables password and keyboard-interactive authentication and forwarding
 *   and does not touch known_hosts.
 * Revoked keys are always refused: sshd(8) says they "must not ever be accepted" (the ssh 9.2 client does accept
 * one under `no`, with the same restrictions; skysync is stricter there).
 */
export function hostKeyPolicy(
  resolved: Pick<ResolvedHost, 'hostname' | 'port' | 'strictHostKeyChecking' | 'userKnownHostsFiles' | 'globalKnownHostsFiles'> &
    Partial<Pick<ResolvedHost, 'hostKeyAlias' | 'hashKnownHosts'>>,
): HostKeyPolicy {
  const strict = resolved.strictHostKeyChecking;
  const first = resolved.userKnownHostsFiles[0];
  const addTo = first && first !== '/dev/null' && first.toLowerCase() !== 'none' ? first : null;
  const add: HostKeyAction = addTo ? 'add' : 'accept';
  let unknown: HostKeyAction;
  let mismatch: HostKeyAction;
  switch (strict) {
    case 'accept-new':
      unknown = add;
      mismatch = 'refuse';
      break;
    case 'no':
    case 'off':
      unknown = add;
      mismatch = 'warn';
      break;
    default: // yes, ask
      unknown = 'refuse';
      mismatch = 'refuse';
  }
  const table = { match: 'accept' as HostKeyAction, unknown, mismatch, revoked: 'refuse' as HostKeyAction };
  return {
    strictHostKeyChecking: strict,
    files: [...resolved.userKnownHostsFiles, ...resolved.globalKnownHostsFiles],
    addTo,
    hash: resolved.hashKnownHosts ?? false,
    lookup: resolved.hostKeyAlias ? { host: resolved.hostKeyAlias, port: 22 } : { host: resolved.hostname, port: resolved.port },
    ...table,
    decide: (status) => table[status],
  };
}

// ---- messages ----

export interface HostKeyMessageArgs {
  host: string;
  port: number;
  keyType: string;
  /** The server's key, for its fingerprint. */
  key?: Buffer;
  /** The known_hosts file and line that disagree. */
  file?: string;
  line?: number;
}

/** One line: the host key for X changed, what that can mean, and how to fix the file. */
export function mismatchMessage(a: HostKeyMessageArgs): string {
  const name = knownHostsName(a.host, a.port);
  const type = keyTypeLabel((a.key && keyTypeOf(a.key)) ?? a.keyType);
  const fp = a.key ? ` ${fingerprint(a.key)}` : '';
  const where = a.file ? `${a.file}${a.line ? `:${a.line}` : ''}` : 'known_hosts';
  const fix = `ssh-keygen -R ${shellQuote(name)}${a.file ? ` -f ${shellQuote(a.file)}` : ''}`;
  return (
    `Host key for ${name} has changed (it now offers ${type}${fp}, which does not match ${where}): ` +
    `either the host was reinstalled or re-keyed, or someone is intercepting the connection (man-in-the-middle); ` +
    `if you trust the change, remove the old key with \`${fix}\` and connect again.`
  );
}

/** One line for a key marked @revoked. */
export function revokedMessage(a: HostKeyMessageArgs): string {
  const name = knownHostsName(a.host, a.port);
  const type = keyTypeLabel((a.key && keyTypeOf(a.key)) ?? a.keyType);
  const fp = a.key ? ` ${fingerprint(a.key)}` : '';
  const where = a.file ? ` (${a.file}${a.line ? `:${a.line}` : ''})` : '';
  return `The ${type}${fp} host key offered by ${name} is marked @revoked${where}: a stolen key may be impersonating the host; refusing to connect.`;
}

/** One line for an unknown key that the policy refuses. */
export function unknownMessage(a: HostKeyMessageArgs & { files?: string[] }): string {
  const name = knownHostsName(a.host, a.port);
  const type = keyTypeLabel((a.key && keyTypeOf(a.key)) ?? a.keyType);
  const fp = a.key ? ` ${fingerprint(a.key)}` : '';
  const files = a.files?.length ? ` in ${a.files.join(', ')}` : '';
  return (
    `No host key is known for ${name}${files} and StrictHostKeyChecking requires one (${type}${fp}): ` +
    `verify the fingerprint, then add it with \`ssh-keyscan${a.port === 22 ? '' : ` -p ${a.port}`} ${shellQuote(a.host)} >> ~/.ssh/known_hosts\` ` +
    `or set StrictHostKeyChecking accept-new for this host.`
  );
}
