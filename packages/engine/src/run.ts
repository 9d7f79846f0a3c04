// Running setup and run on a node: over the target's connection, in ~/sky_workdir, with the task's envs, output
// streamed live, the exit code kept, and Ctrl-C reaching every process the job started.
//
// The job script travels on the command's stdin (so envs and secrets never show in the remote's process list),
// is written to a private file, and the wrapper execs the job in place as the leader of its own process group.
// A small watcher keeps reading the rest of stdin: each line is a signal name sent to the whole group, and the
// end of stdin (the client went away) hangs the group up, as a terminal would.

import type { Readable } from 'node:stream';
import { shellQuote, type Target } from '@skysync/transport';

const WRAPPER = [
  'umask 077',
  'd="$HOME/.skysync/run"; mkdir -p "$d" || exit 125',
  'f="$d/job.$$"',
  'head -c "$1" > "$f" || exit 125',
  'sh=sh; command -v bash >/dev/null 2>&1 && sh=bash',
  'pg=$(ps -o pgid= -p $$ 2>/dev/null | tr -d " "); [ -n "$pg" ] || pg=$$',
  // Not a group leader (a login shell that forked): become one, so signals reach the job and nothing else.
  'if [ "$pg" != "$$" ] && command -v setsid >/dev/null 2>&1; then pg=$$; set -- setsid "$sh" "$f"; else set -- "$sh" "$f"; fi',
  'exec 3<&0',
  '( while read -r s; do kill -s "$s" -- "-$pg" 2>/dev/null; done; kill -s HUP -- "-$pg" 2>/dev/null ) <&3 >/dev/null 2>&1 &',
  'exec "$@" </dev/null 3<&-',
].join('\n');

export { shellQuote };

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The job as the node runs it: envs exported, then the user's script from the working directory. */
export function jobScript(script: string, env: Record<string, string>, cwd: string): string {
  const lines = ['rm -f "$0"'];
  for (const [k, v] of Object.entries(env)) {
    if (!NAME.test(k)) throw new Error(`${JSON.stringify(k)} is not a valid environment variable name`);
    lines.push(`export ${k}=${shellQuote(v)}`);
  }
  const dir = cwd === '~' ? '"$HOME"' : cwd.startsWith('~/') ? `"$HOME"/${shellQuote(cwd.slice(2))}` : shellQuote(cwd);
  // SkyPilot runs in ~/sky_workdir when there is one, in the home directory otherwise.
  lines.push(`cd ${dir} 2>/dev/null || cd "$HOME"`);
  lines.push(script);
  return lines.join('\n') + '\n';
}

export interface RemoteJob {
  stdout: Readable;
  stderr: Readable;
  /** The exit code as a shell reports it: 128 + n for a signal, 255 when the connection was lost. */
  exited: Promise<number>;
  /** Sends a signal (by name: INT, TERM, KILL) to every process of the job. */
  signal(name: 'INT' | 'TERM' | 'KILL' | 'HUP'): void;
}

export async function runJob(target: Target, script: string, env: Record<string, string>, cwd = '~/sky_workdir'): Promise<RemoteJob> {
  const job = Buffer.from(jobScript(script, env, cwd), 'utf8');
  const proc = await target.exec(`sh -c ${shellQuote(WRAPPER)} skysync-run ${job.length}`);
  proc.stdin.write(job);
  let ended = false;
  return {
    stdout: proc.stdout,
    stderr: proc.stderr,
    exited: proc.exited.then((code) => {
      ended = true;
      proc.stdin.end();
      return code ?? 255;
    }),
    signal: (name) => {
      if (!ended) proc.stdin.write(`${name}\n`);
    },
  };
}
