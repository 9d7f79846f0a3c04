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

export { configNames, hostPatterns, listWorkers } from './hosts.js';
export { matchPattern } from './match.js';
export { globPaths } from './parse.js';
export { resolveHost } from './resolve.js';
export { parseSshGOutput } from './ssh-g.js';
export { parseProxyJump, parseTargetSpec } from './target-spec.js';
export { SshConfigError, type ResolvedHost, type ResolveOptions, type StrictHostKeyChecking, type TargetSpec } from './types.js';
