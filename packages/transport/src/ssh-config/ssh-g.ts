// The `ssh -G` path: ask the user's own ssh for the effective configuration (no network).

import { spawn } from 'node:child_process';
import { localUserName, passwdHome } from './local-user.js';
import { finish, type RawConfig } from './raw-config.js';
import { SshConfigError, type ResolvedHost, type ResolveOptions, type TargetSpec } from './types.js';

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

export async function viaSshG(spec: TargetSpec, opts: ResolveOptions, env: NodeJS.ProcessEnv, bin: string): Promise<ResolvedHost> {
  const args = ['-G'];
  if (opts.configFile) args.push('-F', opts.configFile);
  if (spec.user) args.push('-l', spec.user);
  if (spec.port) args.push('-p', String(spec.port));
  args.push('--', spec.alias);
  const r = await runSshG(bin, args, env, opts.timeoutMs ?? 10_000);
  if (r.code !== 0) {
    const msg = r.stderr
      .trim()
      .split('\n')
      .filter((l) => !/^Pseudo-terminal will not be allocated/.test(l))
      .join('; ');
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
