// Resolving a host: `ssh -G` when an ssh binary is found, else the parser.

import fs from 'node:fs';
import path from 'node:path';
import { viaParser } from './fallback-parser.js';
import { viaSshG } from './ssh-g.js';
import { parseTargetSpec } from './target-spec.js';
import { SshConfigError, type ResolvedHost, type ResolveOptions, type TargetSpec } from './types.js';

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
