// The shapes of ssh-config resolution: what a resolved host holds, what a caller may ask, and its error.

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
