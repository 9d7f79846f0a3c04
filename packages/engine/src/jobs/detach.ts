// Starting a job that outlives the SSH connection: on each node a supervisor in its own session (setsid: no
// SIGHUP when the connection drops, no terminal, stdio on /dev/null) runs the job as the leader of its own
// process group, keeps its output in a log, and records its end. The script crosses on stdin, as for attached
// jobs, so envs and secrets never show in a process list; the job removes it as it starts.

import { shellQuote, type Target } from '@skysync/transport';
import { nodeEnv, type RunRequest } from '../cluster/run-nodes.js';
import { jobScript } from '../run.js';
import { listJobs, nextJobId } from './list.js';

// $1 job dir, $2 the login umask. `wait` gives the job's code (128 + n when a signal ended it).
const SUPERVISOR = [
  'd=$1; umask "$2"',
  'sh=sh; command -v bash >/dev/null 2>&1 && sh=bash',
  'echo $$ > "$d/supervisor"',
  'date +%s > "$d/started"',
  'setsid "$sh" "$d/job.sh" > "$d/log" 2>&1 < /dev/null &',
  'p=$!',
  'echo $p > "$d/pgid"',
  'echo RUNNING > "$d/state.new" && mv -f "$d/state.new" "$d/state"',
  'wait $p; c=$?',
  'date +%s > "$d/ended"; echo $c > "$d/exit"',
  'if [ -e "$d/cancelled" ]; then s=CANCELLED; elif [ $c -eq 0 ]; then s=SUCCEEDED; else s=FAILED; fi',
  'echo $s > "$d/state.new" && mv -f "$d/state.new" "$d/state"',
].join('\n');

// $1 script bytes, $2 name bytes (both on stdin, in that order), $3 id, $4 rank. The job's files are private from
// the first byte; the job itself gets the login umask back.
const START = [
  'u=$(umask); umask 077',
  'command -v setsid >/dev/null 2>&1 || { echo "setsid not found (util-linux)" >&2; exit 125; }',
  'j="$HOME/.skysync/jobs"; d="$j/$3"',
  'mkdir -p "$j" && mkdir "$d" || exit 125',
  'head -c "$1" > "$d/job.sh" || exit 125',
  'head -c "$2" > "$d/name"',
  'echo "$4" > "$d/rank"; date +%s > "$d/submitted"; echo PENDING > "$d/state"',
  `setsid sh -c ${shellQuote(SUPERVISOR)} skysync-job "$d" "$u" < /dev/null > /dev/null 2>&1 &`,
].join('\n');

export interface DetachRequest extends Omit<RunRequest, 'stdout' | 'stderr'> {
  /** Where the job runs (default ~/sky_workdir, or home when it does not exist). */
  cwd?: string;
  /**
   * The task's FUSE mount paths: the script may call `skysync_flush`, the barrier on this node (fails when not every
   * write under them reached the bucket). Without paths it is a no-op.
   */
  barrierPaths?: string[];
  /** What `skysync jobs` shows (default the script's first line). */
  name?: string;
}

/** The shell function `skysync_flush` for one node: the agent's flush barrier over the task's mount paths. */
function barrierFunction(target: Target, paths: string[] | undefined): string {
  if (!paths?.length) return 'skysync_flush() { :; }';
  const request = JSON.stringify({ mounts: [], only: paths, skipUnknown: true });
  return `skysync_flush() { printf '%s' ${shellQuote(request)} | ( ${target.agentCommand(['fuse', 'flush'])} ) > /dev/null || { echo "skysync: not every write under the task's mounts reached the bucket; skysync flush names the files" >&2; return 1; }; }`;
}

export interface DetachResult {
  id: number;
  /** Per node, in node order: null when the job started there, else why not. */
  errors: Array<string | null>;
}

async function startOnNode(target: Target, id: number, rank: number, script: Buffer, name: Buffer): Promise<string | null> {
  try {
    const proc = await target.exec(`sh -c ${shellQuote(START)} skysync-detach ${script.length} ${name.length} ${id} ${rank}`);
    let err = '';
    proc.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
    proc.stdout.resume();
    proc.stdin.end(Buffer.concat([script, name]));
    const code = await proc.exited;
    return code === 0 ? null : err.trim() || `starting the job exited with ${code ?? 'no code'}`;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Starts `req.script` on every node under its supervisor; resolves once every node has it running or refused. */
export async function startDetached(req: DetachRequest): Promise<DetachResult> {
  const listings = await listJobs(req.nodes);
  const unreachable = listings.find((l) => l.error);
  if (unreachable) throw new Error(`${unreachable.node}: ${unreachable.error}`);
  const id = nextJobId(listings);
  const name = Buffer.from((req.name ?? req.script).trim().split('\n')[0]!.slice(0, 200), 'utf8');
  const errors = await Promise.all(
    req.nodes.map((t, rank) =>
      startOnNode(t, id, rank, Buffer.from(jobScript(`${barrierFunction(t, req.barrierPaths)}\n${req.script}`, nodeEnv(req, rank), req.cwd ?? '~/sky_workdir'), 'utf8'), name),
    ),
  );
  return { id, errors };
}
