// The parser path, used without an ssh binary: reads the config files for one host, keeping the first value of
// each option, following Include, and skipping Match blocks (never executed).

import fs from 'node:fs';
import path from 'node:path';
import { localUserName, passwdHome } from './local-user.js';
import { hostLineMatches } from './match.js';
import { globPaths, includeTarget, MAX_INCLUDE_DEPTH, parseLine, type Line } from './parse.js';
import { finish, type RawConfig } from './raw-config.js';
import { SshConfigError, type ResolvedHost, type ResolveOptions, type TargetSpec } from './types.js';

const SYSTEM_CONFIG = '/etc/ssh/ssh_config';

interface ParseState {
  host: string;
  home: string;
  values: Map<string, string[]>;
  identityFiles: string[];
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

export function viaParser(spec: TargetSpec, opts: ResolveOptions, env: NodeJS.ProcessEnv): ResolvedHost {
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
