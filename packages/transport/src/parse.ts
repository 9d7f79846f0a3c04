import os from 'node:os';
import path from 'node:path';
import { LocalTarget } from './local.js';
import { SshTarget, type SshTargetOptions } from './ssh.js';
import { TargetError, type Target } from './target.js';

/**
 * `local:DIR` (DIR plays the remote's home; the agent runs as a child process), or anything OpenSSH would
 * take: an alias from the SSH config, `user@host`, `user@host:port`, `ssh://user@host:port`.
 */
export function parseTarget(spec: string, opts: SshTargetOptions & { cwd?: string } = {}): Target {
  if (spec.startsWith('local:')) {
    let dir = spec.slice('local:'.length);
    if (!dir) throw new TargetError(`target ${JSON.stringify(spec)}: give a directory after local:, e.g. local:/tmp/node1`);
    if (dir === '~' || dir.startsWith('~/')) dir = path.join(os.homedir(), dir.slice(1));
    return new LocalTarget(spec, path.resolve(opts.cwd ?? process.cwd(), dir));
  }
  if (!spec || spec.startsWith('-') || /\s/.test(spec)) {
    throw new TargetError(`target ${JSON.stringify(spec)}: expected local:DIR, an SSH alias, user@host[:port] or ssh://user@host[:port]`);
  }
  return new SshTarget(spec, { ...opts, configFile: opts.configFile ?? process.env.SKYSYNC_SSH_CONFIG });
}
