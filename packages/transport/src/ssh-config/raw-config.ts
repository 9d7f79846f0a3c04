// Turning the raw option values either path collects into a ResolvedHost: defaults, value checks, token and `~`
// expansion, identical for `ssh -G` and the parser.

import { tildeExpand } from './local-user.js';
import { expandTokens, FILE_TOKENS, type TokenContext } from './tokens.js';
import { SshConfigError, type ResolvedHost, type StrictHostKeyChecking } from './types.js';

const DEFAULT_IDENTITY_FILES = ['~/.ssh/id_rsa', '~/.ssh/id_ecdsa', '~/.ssh/id_ecdsa_sk', '~/.ssh/id_ed25519', '~/.ssh/id_ed25519_sk', '~/.ssh/id_xmss', '~/.ssh/id_dsa'];
const DEFAULT_USER_KNOWN_HOSTS = ['~/.ssh/known_hosts', '~/.ssh/known_hosts2'];
const DEFAULT_GLOBAL_KNOWN_HOSTS = ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'];

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
export interface RawConfig {
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

export function finish(alias: string, raw: RawConfig, home: string, env: NodeJS.ProcessEnv, localUser: string, via: ResolvedHost['via']): ResolvedHost {
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
