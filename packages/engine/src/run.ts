// Running setup and run on a node: over the target's connection, in ~/sky_workdir, with the task's envs, output
// streamed live, the exit code kept, and Ctrl-C reaching every process the job started.
//
// The job script travels on the command's stdin (so envs and secrets never show in the remote's process list),
// is written to a private file, and the wrapper execs the job in place as the leader of its own process group.
// A small watcher keeps reading the rest of stdin: each line is a signal name sent to the whole group, and the
// end of stdin (the client went away) hangs the group up, as a terminal would.

import type { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { shellQuote, type RemoteProcess, type Target } from '@skysync/transport';

const WRAPPER = [
  // The job gets the login umask back; only the files written here are private.
  'u=$(umask); umask 077',
  'd="$HOME/.skysync/run"; mkdir -p "$d" || exit 125',
  'f="$d/job.$$"',
  'head -c "$1" > "$f" || exit 125',
  // Standard input from the client: a private FIFO the job reads, fed by a second channel (`feedStdin`).
  'i=/dev/null; if [ -n "$2" ]; then i="$d/in.$2"; rm -f "$i"; mkfifo -m 600 "$i" || exit 125; fi',
  'sh=sh; command -v bash >/dev/null 2>&1 && sh=bash',
  'pg=$(ps -o pgid= -p $$ 2>/dev/null | tr -d " "); [ -n "$pg" ] || pg=$$',
  // Not a group leader (a login shell that forked): become one, so signals reach the job and nothing else.
  'if [ "$pg" != "$$" ] && command -v setsid >/dev/null 2>&1; then pg=$$; set -- setsid "$sh" "$f" "$i"; else set -- "$sh" "$f" "$i"; fi',
  'exec 3<&0',
  '( while read -r s; do kill -s "$s" -- "-$pg" 2>/dev/null; done; kill -s HUP -- "-$pg" 2>/dev/null; [ "$i" = /dev/null ] || rm -f "$i" ) <&3 >/dev/null 2>&1 &',
  'umask "$u"',
  'exec "$@" <"$i" 3<&-',
].join('\n');

export { shellQuote };

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The job as the node runs it: envs exported, then the user's script from the working directory. */
export function jobScript(script: string, env: Record<string, string>, cwd: string): string {
  // The job's stdin is open by now: its FIFO (when there is one) can go with the script.
  const lines = ['rm -f "$0"; case "$1" in "$HOME"/.skysync/run/in.*) rm -f "$1" ;; esac; set --'];
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

export interface JobOptions {
  /** Where the job runs (default ~/sky_workdir; the home directory when that does not exist). */
  cwd?: string;
  /** Fed to the job's standard input (the head's job only); otherwise the job reads /dev/null. */
  stdin?: Readable;
}

export async function runJob(target: Target, script: string, env: Record<string, string>, opts: JobOptions = {}): Promise<RemoteJob> {
  const job = Buffer.from(jobScript(script, env, opts.cwd ?? '~/sky_workdir'), 'utf8');
  const token = opts.stdin ? randomBytes(8).toString('hex') : '';
  const proc = await target.exec(`sh -c ${shellQuote(WRAPPER)} skysync-run ${job.length} ${token}`);
  proc.stdin.write(job);
  let ended = false;
  const fed = opts.stdin ? feedStdin(target, token, opts.stdin) : null;
  return {
    stdout: proc.stdout,
    stderr: proc.stderr,
    exited: proc.exited.then(async (code) => {
      ended = true;
      proc.stdin.end();
      await fed?.stop();
      return code ?? 255;
    }),
    signal: (name) => {
      if (!ended) proc.stdin.write(`${name}\n`);
    },
  };
}

const FEED = 'f="$HOME/.skysync/run/in.$1"; n=0; while [ ! -p "$f" ]; do n=$((n+1)); [ $n -gt 600 ] && exit 1; sleep 0.05; done; exec cat > "$f"';

/** Copies `from` into the job's FIFO over a channel of its own; `stop` ends it once the job is over. */
function feedStdin(target: Target, token: string, from: Readable): { stop(): Promise<void> } {
  let proc: RemoteProcess | null = null;
  const started = target.exec(`sh -c ${shellQuote(FEED)} skysync-stdin ${token}`).then((p) => {
    proc = p;
    p.stdout.resume();
    p.stderr.resume();
    from.pipe(p.stdin);
    return p;
  });
  started.catch(() => {});
  return {
    async stop() {
      try {
        await started;
      } catch {
        return;
      }
      from.unpipe(proc!.stdin);
      proc!.stdin.end();
      // A job that never read its input leaves the feeder blocked on the FIFO: it goes with the channel.
      await Promise.race([proc!.exited, new Promise((r) => setTimeout(r, 2000).unref())]);
    },
  };
}
