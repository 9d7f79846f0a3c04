// Resolving an SSH target the way OpenSSH does.
//
// With an `ssh` binary: `ssh -G [-F file] [-l user] [-p port] <alias>` prints the effective configuration (Include,
// Host/Match, defaults, system config all applied; no network). Without one: a parser of ssh_config that follows
// Include, matches Host patterns, keeps the first value of each option, skips Match blocks (never executes them)
// and expands `%` tokens, `${VAR}` and `~` where OpenSSH does.
//
// OpenSSH details this mirrors (checked against OpenSSH 9.2 with `ssh -G`):
// - `~`, `%d` and the user config's location come from the passwd database, not from $HOME.
// - Host patterns match the alias as typed, case-sensitively; the resolved HostName is lowercased.
// - Whichever of ProxyCommand/ProxyJump comes first wins; `none` disables both.
// - An Include inside a Host block that does not match is not read at all (its own Host blocks included).
// - `ssh -G` prints UserKnownHostsFile already expanded but IdentityFile, ProxyCommand and GlobalKnownHostsFile
//   raw; GlobalKnownHostsFile is never expanded (not even `~`).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { TargetError } from './target.js';

export type StrictHostKeyChecking = 'yes' | 'no' | 'accept-new' | 'ask' | 'off';

export interface ResolvedHost {
  /** The alias as given (what Host patterns are matched against). */
  alias: string;
  /** The address to connect to (HostName, tokens expanded, lowercased; the alias when unset). */
  hostname: string;
  user: string;
  port: number;
  /** Expanded paths, in order; OpenSSH's default list when none is configured. */
  identityFiles: string[];
  identitiesOnly: boolean;
  /** `user@host:port,...` as configured, or null. */
  proxyJump: string | null;
  /** The command with `%h %p %r %n %%` expanded, or null. */
  proxyCommand: string | null;
  /** `no` and `off` are the same to OpenSSH; both come back as `no`. */
  strictHostKeyChecking: StrictHostKeyChecking;
  userKnownHostsFiles: string[];
  globalKnownHostsFiles: string[];
  /** null: no timeout (unset, or 0). */
  connectTimeoutMs: number | null;
  /** 0: keepalives off. */
  serverAliveIntervalSec: number;
  serverAliveCountMax: number;
  /** The name to look up in known_hosts instead of the hostname, or null. (Always set by resolveHost.) */
  hostKeyAlias?: string | null;
  /** Whether new known_hosts entries should be hashed (HashKnownHosts). (Always set by resolveHost.) */
  hashKnownHosts?: boolean;
  via: 'ssh -G' | 'parser';
}

export interface ResolveOptions {
  /** A config file to read instead of ~/.ssh/config and the system one (like `ssh -F`). */
  configFile?: string;
  /** Environment for `ssh` (PATH) and for `${VAR}` expansion; its HOME is the parser's home. Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** The local home for `~`, `%d` and ~/.ssh. Default: env.HOME for the parser, the passwd entry for `ssh -G`. */
  home?: string;
  /** Overrides, like `ssh -l user -p port` (they beat the config). */
  user?: string | null;
  port?: number | null;
  /** Which way to resolve. `auto` (default): `ssh -G` when an ssh binary is found, else the parser. */
  via?: 'auto' | 'ssh -G' | 'parser';
  /** The ssh binary to run (default: `ssh` on env.PATH). */
  sshBinary?: string;
  /** Parser only: the system-wide config read after the user's when no configFile (default /etc/ssh/ssh_config). */
  systemConfigFile?: string | null;
  /** The local user name for `%u` and the parser's default User (default: the current user). */
  localUser?: string;
  timeoutMs?: number;
}

export class SshConfigError extends Error {
  override name = 'SshConfigError';
}

export interface TargetSpec {
  alias: string;
  user: string | null;
  port: number | null;
}

const DEFAULT_IDENTITY_FILES = [
  '~/.ssh/id_rsa',
  '~/.ssh/id_ecdsa',
  '~/.ssh/id_ecdsa_sk',
  '~/.ssh/id_ed25519',
  '~/.ssh/id_ed25519_sk',
  '~/.ssh/id_xmss',
  '~/.ssh/id_dsa',
];
const DEFAULT_USER_KNOWN_HOSTS = ['~/.ssh/known_hosts', '~/.ssh/known_hosts2'];
const DEFAULT_GLOBAL_KNOWN_HOSTS = ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'];
const SYSTEM_CONFIG = '/etc/ssh/ssh_config';
const MAX_INCLUDE_DEPTH = 16;

// ---------------------------------------------------------------------------------------------------------------
// Target specs

function parsePort(s: string, spec: string): number {
  if (!/^\d{1,5}$/.test(s)) throw new TargetError(`bad port "${s}" in "${spec}"`);
  const n = Number(s);
  if (n < 1 || n > 65535) throw new TargetError(`port ${n} out of range in "${spec}"`);
  return n;
}

function checkHostName(host: string, spec: string): void {
  if (!host) throw new TargetError(`no host in "${spec}"`);
  if (host.startsWith('-')) throw new TargetError(`host may not start with "-": "${spec}"`);
  if (/[\s\x00-\x1f\x7f'"`\\]/.test(host)) throw new TargetError(`invalid characters in host of "${spec}"`);
}

/**
 * Splits `alias`, `user@host`, `user@host:port`, `host:port`, `ssh://[user@]host[:port]` (IPv6 in brackets:
 * `user@[::1]:22`) into the alias to resolve and the user/port that override the config.
 */
export function parseTargetSpec(spec: string): TargetSpec {
  let rest = spec.trim();
  const uri = /^ssh:\/\//i.test(rest);
  if (uri) {
    rest = rest.slice(6);
    if (rest.endsWith('/')) rest = rest.slice(0, -1);
    if (rest.includes('/')) throw new TargetError(`an ssh:// target takes no path: "${spec}"`);
  }
  let user: string | null = null;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    user = rest.slice(0, at);
    rest = rest.slice(at + 1);
    if (uri) user = user.split(';')[0]!; // ssh://user;params@host
    if (!user) throw new TargetError(`empty user in "${spec}"`);
    if (/[\s\x00-\x1f\x7f]/.test(user)) throw new TargetError(`invalid characters in user of "${spec}"`);
  }
  let port: number | null = null;
  let host = rest;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0) throw new TargetError(`unclosed "[" in "${spec}"`);
    host = rest.slice(1, close);
    const after = rest.slice(close + 1);
    if (after.startsWith(':')) port = parsePort(after.slice(1), spec);
    else if (after) throw new TargetError(`unexpected "${after}" after "]" in "${spec}"`);
  } else {
    const colons = rest.split(':').length - 1;
    if (colons === 1) {
      const i = rest.indexOf(':');
      host = rest.slice(0, i);
      port = parsePort(rest.slice(i + 1), spec);
    } // several colons without brackets: an IPv6 address, no port
  }
  checkHostName(host, spec);
  return { alias: host, user, port };
}

/** One hop of a ProxyJump list: `[user@]host[:port]` or `ssh://...`. */
export function parseProxyJump(s: string): TargetSpec[] {
  if (s.trim().toLowerCase() === 'none') return [];
  return s
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean)
    .map((h) => parseTargetSpec(h));
}

// ---------------------------------------------------------------------------------------------------------------
// Small pieces shared by both paths

function passwdHome(): string {
  try {
    return os.userInfo().homedir;
  } catch {
    return os.homedir();
  }
}

function localUserName(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.env.USER ?? String(process.getuid?.() ?? 'unknown');
  }
}

/** `~` and `~/x` → home; `~user/x` → that user's home from /etc/passwd (left alone when unknown). */
function tildeExpand(p: string, home: string): string {
  if (p === '~') return home;
  if (p.startsWith('~/')) return path.join(home, p.slice(2));
  const m = /^~([^/]+)(\/.*)?$/.exec(p);
  if (m) {
    try {
      for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
        const f = line.split(':');
        if (f[0] === m[1] && f[5]) return f[5] + (m[2] ?? '');
      }
    } catch {
      /* no passwd file */
    }
  }
  return p;
}

interface TokenContext {
  alias: string;
  hostname: string;
  port: number;
  user: string;
  localUser: string;
  home: string;
  hostKeyAlias: string | null;
}

/** `%x` tokens from `allowed`, `%%`, and (when env is given) `${VAR}`. Unknown tokens are errors, as in ssh. */
function expandTokens(s: string, ctx: TokenContext, allowed: string, env: NodeJS.ProcessEnv | null, what: string): string {
  const localHost = os.hostname();
  const value = (c: string): string => {
    switch (c) {
      case 'h':
        return ctx.hostname;
      case 'p':
        return String(ctx.port);
      case 'r':
        return ctx.user;
      case 'n':
        return ctx.alias;
      case 'u':
        return ctx.localUser;
      case 'd':
        return ctx.home;
      case 'i':
        return String(process.getuid?.() ?? '');
      case 'l':
        return localHost;
      case 'L':
        return localHost.split('.')[0]!;
      case 'k':
        return ctx.hostKeyAlias ?? ctx.alias;
      case 'C':
        return createHash('sha1').update(`${localHost}${ctx.hostname}${ctx.port}${ctx.user}`).digest('hex');
      default:
        throw new SshConfigError(`${what}: unknown token %${c} in "${s}"`);
    }
  };
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch === '%') {
      const c = s[i + 1];
      if (c === undefined) throw new SshConfigError(`${what}: "%" at the end of "${s}"`);
      i++;
      if (c === '%') out += '%';
      else if (allowed.includes(c)) out += value(c);
      else throw new SshConfigError(`${what}: unknown token %${c} in "${s}"`);
    } else if (ch === '$' && env && s[i + 1] === '{') {
      const end = s.indexOf('}', i + 2);
      if (end < 0) throw new SshConfigError(`${what}: unterminated \${ in "${s}"`);
      const name = s.slice(i + 2, end);
      const v = env[name];
      if (v === undefined) throw new SshConfigError(`${what}: environment variable \${${name}} is not set ("${s}")`);
      out += v;
      i = end;
    } else out += ch;
  }
  return out;
}

const FILE_TOKENS = 'CdhiklLnpru';

/** ssh_config time values: `90`, `30s`, `1m30s`, `2h`, `1d`, `1w`. */
function parseTime(v: string, what: string): number {
  if (/^\d+$/.test(v)) return Number(v);
  const re = /(\d+)([smhdwSMHDW])/gy;
  let total = 0;
  let m: RegExpExecArray | null;
  let pos = 0;
  while ((m = re.exec(v))) {
    const mult = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2]!.toLowerCase() as 's' | 'm' | 'h' | 'd' | 'w'];
    total += Number(m[1]) * mult;
    pos = re.lastIndex;
  }
  if (pos !== v.length || !v) throw new SshConfigError(`${what}: bad time value "${v}"`);
  return total;
}

function parseFlag(v: string | undefined, def: boolean, what: string): boolean {
  if (v === undefined) return def;
  const l = v.toLowerCase();
  if (l === 'yes' || l === 'true') return true;
  if (l === 'no' || l === 'false') return false;
  throw new SshConfigError(`${what}: expected yes or no, got "${v}"`);
}

function parseStrict(v: string | undefined): StrictHostKeyChecking {
  if (v === undefined) return 'ask';
  switch (v.toLowerCase()) {
    case 'yes':
    case 'true':
      return 'yes';
    case 'no':
    case 'false':
    case 'off':
      return 'no';
    case 'ask':
      return 'ask';
    case 'accept-new':
      return 'accept-new';
    default:
      throw new SshConfigError(`StrictHostKeyChecking: bad value "${v}"`);
  }
}

function parsePortValue(v: string | undefined): number {
  if (v === undefined) return 22;
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 65535) throw new SshConfigError(`Port: bad value "${v}"`);
  return Number(v);
}

function noneToNull(v: string | undefined): string | null {
  return v === undefined || v.toLowerCase() === 'none' ? null : v;
}

/** The raw per-option values both paths produce, finished the same way. */
interface RawConfig {
  hostname?: string;
  user?: string;
  port?: string;
  identityFiles: string[];
  identitiesOnly?: string;
  proxyJump?: string;
  proxyCommand?: string;
  strict?: string;
  /** Already expanded (ssh -G) or raw (parser): see userKnownHostsExpanded. */
  userKnownHosts?: string[];
  userKnownHostsExpanded: boolean;
  globalKnownHosts?: string[];
  connectTimeout?: string;
  serverAliveInterval?: string;
  serverAliveCountMax?: string;
  hostKeyAlias?: string;
  hashKnownHosts?: string;
}

function finish(alias: string, raw: RawConfig, home: string, env: NodeJS.ProcessEnv, localUser: string, via: ResolvedHost['via']): ResolvedHost {
  const port = parsePortValue(raw.port);
  const user = raw.user ?? localUser;
  const hostKeyAlias = noneToNull(raw.hostKeyAlias);
  const base: TokenContext = { alias, hostname: alias, port, user, localUser, home, hostKeyAlias };
  // HostName takes only %h (the alias) and %%; ssh lowercases the result.
  const hostname = (raw.hostname !== undefined ? expandTokens(raw.hostname, base, 'h', null, 'HostName') : alias).toLowerCase();
  const ctx: TokenContext = { ...base, hostname };

  const identityFiles = (raw.identityFiles.length ? raw.identityFiles : DEFAULT_IDENTITY_FILES).map((f) =>
    tildeExpand(expandTokens(f, ctx, FILE_TOKENS, env, 'IdentityFile'), home),
  );
  const userKnownHostsFiles = raw.userKnownHostsExpanded
    ? (raw.userKnownHosts ?? [])
    : (raw.userKnownHosts ?? DEFAULT_USER_KNOWN_HOSTS).map((f) => expandTokens(tildeExpand(f, home), ctx, FILE_TOKENS, env, 'UserKnownHostsFile'));
  const proxyCommand = noneToNull(raw.proxyCommand);
  const ct = raw.connectTimeout === undefined || raw.connectTimeout === 'none' ? 0 : parseTime(raw.connectTimeout, 'ConnectTimeout');
  const countMax = raw.serverAliveCountMax ?? '3';
  if (!/^\d+$/.test(countMax)) throw new SshConfigError(`ServerAliveCountMax: bad value "${countMax}"`);
  return {
    alias,
    hostname,
    user,
    port,
    identityFiles,
    identitiesOnly: parseFlag(raw.identitiesOnly, false, 'IdentitiesOnly'),
    proxyJump: noneToNull(raw.proxyJump),
    proxyCommand: proxyCommand === null ? null : expandTokens(proxyCommand, ctx, 'hnpr', null, 'ProxyCommand'),
    strictHostKeyChecking: parseStrict(raw.strict),
    userKnownHostsFiles,
    globalKnownHostsFiles: raw.globalKnownHosts ?? DEFAULT_GLOBAL_KNOWN_HOSTS,
    connectTimeoutMs: ct > 0 ? ct * 1000 : null,
    serverAliveIntervalSec: raw.serverAliveInterval === undefined ? 0 : parseTime(raw.serverAliveInterval, 'ServerAliveInterval'),
    serverAliveCountMax: Number(countMax),
    hostKeyAlias,
    hashKnownHosts: parseFlag(raw.hashKnownHosts, false, 'HashKnownHosts'),
    via,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The `ssh -G` path

function findOnPath(cmd: string, env: NodeJS.ProcessEnv): string | null {
  if (cmd.includes('/')) return fs.existsSync(cmd) ? cmd : null;
  for (const d of (env.PATH ?? '').split(path.delimiter)) {
    if (!d) continue;
    const p = path.join(d, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      /* next */
    }
  }
  return null;
}

function runSshG(bin: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Reads `ssh -G` output (lowercase `key value` lines) into the raw shape. */
export function parseSshGOutput(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^(\S+) (.*)$/.exec(line.replace(/\r$/, ''));
    if (!m) continue;
    const k = m[1]!.toLowerCase();
    out.set(k, [...(out.get(k) ?? []), m[2]!]);
  }
  return out;
}

async function viaSshG(spec: TargetSpec, opts: ResolveOptions, env: NodeJS.ProcessEnv, bin: string): Promise<ResolvedHost> {
  const args = ['-G'];
  if (opts.configFile) args.push('-F', opts.configFile);
  if (spec.user) args.push('-l', spec.user);
  if (spec.port) args.push('-p', String(spec.port));
  args.push('--', spec.alias);
  const r = await runSshG(bin, args, env, opts.timeoutMs ?? 10_000);
  if (r.code !== 0) {
    const msg = r.stderr.trim().split('\n').filter((l) => !/^Pseudo-terminal will not be allocated/.test(l)).join('; ');
    throw new SshConfigError(`ssh -G ${spec.alias} failed (exit ${r.code ?? 'killed'}): ${msg || 'no output'}`);
  }
  const g = parseSshGOutput(r.stdout);
  const one = (k: string): string | undefined => g.get(k)?.[0];
  const list = (k: string): string[] | undefined => one(k)?.split(' ').filter(Boolean);
  const strict = one('stricthostkeychecking');
  const raw: RawConfig = {
    hostname: one('hostname')?.replace(/%/g, '%%'), // already expanded by ssh: protect literal %
    user: one('user'),
    port: one('port'),
    identityFiles: g.get('identityfile') ?? [],
    identitiesOnly: one('identitiesonly'),
    proxyJump: one('proxyjump'),
    proxyCommand: one('proxycommand'),
    strict: strict === 'true' ? 'yes' : strict === 'false' ? 'no' : strict,
    userKnownHosts: list('userknownhostsfile') ?? [],
    userKnownHostsExpanded: true,
    globalKnownHosts: list('globalknownhostsfile'),
    connectTimeout: one('connecttimeout'),
    serverAliveInterval: one('serveraliveinterval'),
    serverAliveCountMax: one('serveralivecountmax'),
    hostKeyAlias: one('hostkeyalias'),
    hashKnownHosts: one('hashknownhosts'),
  };
  const home = opts.home ?? passwdHome();
  return finish(spec.alias, raw, home, env, opts.localUser ?? localUserName(), 'ssh -G');
}

// ---------------------------------------------------------------------------------------------------------------
// The parser path

interface Line {
  keyword: string;
  /** Arguments split the way ssh does (quotes, backslash escapes, `#` comments). */
  args: string[];
  /** Everything after the keyword and separator, untouched (ProxyCommand, ProxyJump). */
  rest: string;
}

function splitArgs(s: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < s.length) {
    while (i < s.length && /[ \t]/.test(s[i]!)) i++;
    if (i >= s.length || s[i] === '#') break; // a comment starts where an argument would
    let arg = '';
    let quote: string | null = null;
    for (; i < s.length; i++) {
      const c = s[i]!;
      if (quote === null && /[ \t]/.test(c)) break;
      if (c === '\\' && i + 1 < s.length) {
        const n = s[i + 1]!;
        if (n === "'" || n === '"' || n === '\\' || (quote === null && n === ' ')) {
          arg += n;
          i++;
          continue;
        }
      }
      if (quote === null && (c === '"' || c === "'")) quote = c;
      else if (quote !== null && c === quote) quote = null;
      else arg += c;
    }
    if (quote !== null) throw new SshConfigError(`unterminated quote in "${s}"`);
    out.push(arg);
  }
  return out;
}

function parseLine(raw: string): Line | null {
  const line = raw.replace(/[\s]+$/, '');
  const m = /^[ \t]*([^ \t=]+)[ \t]*(?:=[ \t]*)?(.*)$/.exec(line);
  if (!m || m[1]!.startsWith('#')) return null;
  return { keyword: m[1]!.toLowerCase(), args: splitArgs(m[2]!), rest: m[2]! };
}

/** OpenSSH's wildcard match: `*` any run, `?` one character. */
export function matchPattern(s: string, pattern: string): boolean {
  let si = 0;
  let pi = 0;
  let star = -1;
  let mark = 0;
  while (si < s.length) {
    if (pi < pattern.length && (pattern[pi] === '?' || pattern[pi] === s[si])) {
      si++;
      pi++;
    } else if (pi < pattern.length && pattern[pi] === '*') {
      star = pi++;
      mark = si;
    } else if (star >= 0) {
      pi = star + 1;
      si = ++mark;
    } else return false;
  }
  while (pi < pattern.length && pattern[pi] === '*') pi++;
  return pi === pattern.length;
}

/** A Host line matches when some positive pattern matches and no `!` pattern does (case-sensitive). */
function hostLineMatches(patterns: string[], host: string): boolean {
  let positive = false;
  for (const p of patterns) {
    if (p.startsWith('!')) {
      if (matchPattern(host, p.slice(1))) return false;
    } else if (matchPattern(host, p)) positive = true;
  }
  return positive;
}

/** glob(3) for Include: `*`, `?`, `[...]` per path segment, no match for a leading dot unless written; sorted. */
export function globPaths(pattern: string): string[] {
  const magic = /[*?[]/;
  if (!magic.test(pattern)) return fs.existsSync(pattern) ? [pattern] : [];
  const abs = path.isAbsolute(pattern);
  const segs = pattern.split('/').filter((s, i) => s !== '' || i === 0);
  let bases = [abs ? '/' : '.'];
  for (const seg of segs.slice(abs ? 1 : 0)) {
    const next: string[] = [];
    for (const b of bases) {
      if (!magic.test(seg)) {
        const p = path.join(b, seg);
        if (fs.existsSync(p)) next.push(p);
        continue;
      }
      let names: string[];
      try {
        names = fs.readdirSync(b);
      } catch {
        continue;
      }
      const re = globSegmentRegex(seg);
      for (const n of names.sort()) if (re.test(n) && (!n.startsWith('.') || seg.startsWith('.'))) next.push(path.join(b, n));
    }
    bases = next;
  }
  return bases.map((p) => (abs ? p : path.relative('.', p))).sort();
}

function globSegmentRegex(seg: string): RegExp {
  let re = '^';
  for (let i = 0; i < seg.length; i++) {
    const c = seg[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = seg.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        let body = seg.slice(i + 1, end);
        if (body.startsWith('!')) body = `^${body.slice(1)}`;
        re += `[${body.replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`${re}$`);
}

interface ParseState {
  host: string;
  home: string;
  values: Map<string, string[]>;
  identityFiles: string[];
}

/** Where an Include argument points: `~` expanded (user configs only), relative to ~/.ssh or /etc/ssh. */
function includeTarget(arg: string, userConf: boolean, home: string, file: string): string | null {
  if (arg.startsWith('~')) {
    if (!userConf) throw new SshConfigError(`${file}: Include "${arg}": tilde expansion is not supported in the system config`);
    return tildeExpand(arg, home);
  }
  if (path.isAbsolute(arg)) return arg;
  return userConf ? path.join(home, '.ssh', arg) : path.join('/etc/ssh', arg);
}

const SINGLE = new Set([
  'hostname',
  'user',
  'port',
  'identitiesonly',
  'stricthostkeychecking',
  'connecttimeout',
  'serveraliveinterval',
  'serveralivecountmax',
  'hostkeyalias',
  'hashknownhosts',
]);

function readConfigFile(file: string, st: ParseState, userConf: boolean, depth: number, required: boolean): void {
  if (depth > MAX_INCLUDE_DEPTH) throw new SshConfigError(`${file}: too many nested Includes (more than ${MAX_INCLUDE_DEPTH})`);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!required && (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR')) return;
    throw new SshConfigError(`cannot read ssh config ${file}: ${(e as Error).message}`);
  }
  let active = true;
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    let l: Line | null;
    try {
      l = parseLine(lines[n]!);
    } catch (e) {
      throw new SshConfigError(`${file}:${n + 1}: ${(e as Error).message}`);
    }
    if (!l) continue;
    switch (l.keyword) {
      case 'host':
        active = hostLineMatches(l.args, st.host);
        continue;
      case 'match':
        active = false; // never evaluated: Match exec would run commands
        continue;
      case 'include':
        if (!active) continue;
        for (const a of l.args) {
          const target = includeTarget(a, userConf, st.home, file);
          if (target) for (const f of globPaths(target)) readConfigFile(f, st, userConf, depth + 1, false);
        }
        // Host lines inside the included file do not change this file's block (OpenSSH restores it).
        continue;
    }
    if (!active) continue;
    const k = l.keyword;
    if (k === 'identityfile') {
      const f = l.args[0];
      if (f !== undefined && !st.identityFiles.includes(f)) st.identityFiles.push(f);
    } else if (k === 'proxycommand') {
      if (!st.values.has('proxycommand') && !st.values.has('proxyjump')) st.values.set('proxycommand', [l.rest.trim()]);
    } else if (k === 'proxyjump') {
      if (!st.values.has('proxycommand') && !st.values.has('proxyjump')) st.values.set('proxyjump', [l.rest.trim().split(/[ \t]/)[0] ?? '']);
    } else if (k === 'userknownhostsfile' || k === 'globalknownhostsfile') {
      if (!st.values.has(k) && l.args.length) st.values.set(k, l.args);
    } else if (SINGLE.has(k)) {
      if (!st.values.has(k) && l.args.length) st.values.set(k, [l.args[0]!]);
    }
  }
}

function viaParser(spec: TargetSpec, opts: ResolveOptions, env: NodeJS.ProcessEnv): ResolvedHost {
  const home = opts.home ?? opts.env?.HOME ?? passwdHome();
  const st: ParseState = { host: spec.alias, home, values: new Map(), identityFiles: [] };
  // Command-line values come first, so they win.
  if (spec.user) st.values.set('user', [spec.user]);
  if (spec.port) st.values.set('port', [String(spec.port)]);
  if (opts.configFile) readConfigFile(opts.configFile, st, true, 0, true);
  else {
    readConfigFile(path.join(home, '.ssh', 'config'), st, true, 0, false);
    const sys = opts.systemConfigFile === undefined ? SYSTEM_CONFIG : opts.systemConfigFile;
    if (sys) readConfigFile(sys, st, false, 0, false);
  }
  const v = (k: string): string | undefined => st.values.get(k)?.[0];
  const raw: RawConfig = {
    hostname: v('hostname'),
    user: v('user'),
    port: v('port'),
    identityFiles: st.identityFiles,
    identitiesOnly: v('identitiesonly'),
    proxyJump: v('proxyjump'),
    proxyCommand: v('proxycommand'),
    strict: v('stricthostkeychecking'),
    userKnownHosts: st.values.get('userknownhostsfile'),
    userKnownHostsExpanded: false,
    globalKnownHosts: st.values.get('globalknownhostsfile'),
    connectTimeout: v('connecttimeout'),
    serverAliveInterval: v('serveraliveinterval'),
    serverAliveCountMax: v('serveralivecountmax'),
    hostKeyAlias: v('hostkeyalias'),
    hashKnownHosts: v('hashknownhosts'),
  };
  return finish(spec.alias, raw, home, env, opts.localUser ?? localUserName(), 'parser');
}

// ---------------------------------------------------------------------------------------------------------------
// Public entry points

/**
 * Resolves an alias (or `user@host[:port]`, `ssh://user@host:port`) the way `ssh` would. An alias no config
 * mentions still resolves: it is then the hostname, with OpenSSH's defaults.
 */
export async function resolveHost(alias: string, opts: ResolveOptions = {}): Promise<ResolvedHost> {
  const parsed = parseTargetSpec(alias);
  const spec: TargetSpec = {
    alias: parsed.alias,
    user: opts.user ?? parsed.user,
    port: opts.port ?? parsed.port,
  };
  const env = opts.env ?? process.env;
  const mode = opts.via ?? 'auto';
  if (mode !== 'parser') {
    const bin = findOnPath(opts.sshBinary ?? 'ssh', env);
    if (bin) {
      try {
        return await viaSshG(spec, opts, env, bin);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        // Not runnable after all, or ssh cannot work for this uid (no passwd entry): the parser can.
        const fallback = err.code === 'ENOENT' || err.code === 'EACCES' || /No user exists for uid/.test(err.message);
        if (!fallback || mode === 'ssh -G') throw e;
      }
    } else if (mode === 'ssh -G') throw new SshConfigError(`no ssh binary found (${opts.sshBinary ?? 'ssh on PATH'})`);
  }
  return viaParser(spec, opts, env);
}

/** Every pattern of every `Host` line of a config (following Includes), in order, each once. */
export function hostPatterns(configFile?: string, opts: { home?: string; env?: NodeJS.ProcessEnv } = {}): string[] {
  const home = opts.home ?? opts.env?.HOME ?? passwdHome();
  const found = new Set<string>();
  const seen = new Set<string>();
  const scan = (file: string, depth: number, required: boolean): void => {
    if (depth > MAX_INCLUDE_DEPTH || seen.has(file)) return;
    seen.add(file);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      if (required) throw new SshConfigError(`cannot read ssh config ${file}: ${(e as Error).message}`);
      return;
    }
    for (const raw of text.split('\n')) {
      let l: Line | null;
      try {
        l = parseLine(raw);
      } catch {
        continue;
      }
      if (!l) continue;
      if (l.keyword === 'host') for (const p of l.args) found.add(p);
      else if (l.keyword === 'include') {
        for (const a of l.args) {
          const target = includeTarget(a, true, home, file);
          if (target) for (const f of globPaths(target)) scan(f, depth + 1, false);
        }
      }
    }
  };
  scan(configFile ?? path.join(home, '.ssh', 'config'), 0, configFile !== undefined);
  return [...found];
}

/**
 * The `<cluster>-workerN` aliases a config defines (following Includes), sorted by N. SkyPilot names worker
 * nodes so; the head is `<cluster>` itself.
 */
export async function listWorkers(cluster: string, configFile?: string, opts: { home?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string[]> {
  const re = new RegExp(`^${cluster.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-worker(\\d+)$`);
  const found = new Map<string, number>();
  for (const p of hostPatterns(configFile, opts)) {
    const m = re.exec(p);
    if (m) found.set(p, Number(m[1]));
  }
  return [...found].sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0])).map(([alias]) => alias);
}

/**
 * Whether a config names `alias`: a Host line with it, or with a pattern other than a catch-all `*` that it
 * matches (a negated pattern is left aside). The aliases it does name, for a suggestion.
 */
export function configNames(alias: string, configFile?: string, opts: { home?: string; env?: NodeJS.ProcessEnv } = {}): { named: boolean; aliases: string[] } {
  const patterns = hostPatterns(configFile, opts);
  const aliases = patterns.filter((p) => !/[*?!]/.test(p));
  const named = aliases.includes(alias) || patterns.some((p) => p !== '*' && !p.startsWith('!') && /[*?]/.test(p) && matchPattern(alias, p));
  return { named, aliases };
}
