// What every node knows about its detached jobs, read in one round trip per node.
//
// A job lives in ~/.skysync/jobs/<id>/ on each node that runs it (see docs/JOBS-draft.md); the id is the same on
// every node of one submission, so the client puts a job back together from the nodes' listings.

import { shellQuote, type Target } from '@skysync/transport';
import { capture } from '../cluster/capture.js';

export type JobState = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED' | 'FAILED_DRIVER';

/** One node's record of one job. */
export interface NodeJob {
  id: number;
  state: JobState;
  exitCode: number | null;
  rank: number;
  /** Epoch seconds. */
  submitted: number | null;
  started: number | null;
  ended: number | null;
  /** The first line of the command (never the envs). */
  name: string;
}

/** What one node answered: its jobs, or why it could not say. */
export interface NodeListing {
  node: string;
  jobs: NodeJob[];
  error: string | null;
}

/** The jobs directory on a node, as the remote shell spells it. */
export const JOBS_DIR = '"$HOME/.skysync/jobs"';

// A RUNNING job whose supervisor is gone (the node rebooted, someone killed it) will never record its end.
const LIST = `cd ${JOBS_DIR} 2>/dev/null || exit 0
for d in *; do
  [ -f "$d/state" ] || continue
  s=$(cat "$d/state")
  if [ "$s" = RUNNING ] && [ -s "$d/supervisor" ] && ! kill -0 "$(cat "$d/supervisor")" 2>/dev/null; then
    s=$(cat "$d/state"); [ "$s" = RUNNING ] && s=FAILED_DRIVER
  fi
  printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' "$d" "$s" "$(cat "$d/exit" 2>/dev/null)" "$(cat "$d/rank" 2>/dev/null)" \\
    "$(cat "$d/submitted" 2>/dev/null)" "$(cat "$d/started" 2>/dev/null)" "$(cat "$d/ended" 2>/dev/null)" "$(head -n 1 "$d/name" 2>/dev/null)"
done`;

function num(s: string | undefined): number | null {
  return s && /^-?\d+$/.test(s.trim()) ? Number(s.trim()) : null;
}

export function parseListing(out: string): NodeJob[] {
  const jobs: NodeJob[] = [];
  for (const line of out.split('\n')) {
    const [id, state, exit, rank, submitted, started, ended, ...name] = line.split('\t');
    if (!id || !/^\d+$/.test(id) || !state) continue;
    jobs.push({
      id: Number(id),
      state: state as JobState,
      exitCode: num(exit),
      rank: num(rank) ?? 0,
      submitted: num(submitted),
      started: num(started),
      ended: num(ended),
      name: name.join('\t'),
    });
  }
  return jobs.sort((a, b) => a.id - b.id);
}

export async function listNodeJobs(target: Target): Promise<NodeListing> {
  try {
    const r = await capture(target, `sh -c ${shellQuote(LIST)}`);
    if (r.code !== 0) return { node: target.spec, jobs: [], error: r.err.trim() || `listing the jobs exited with ${r.code}` };
    return { node: target.spec, jobs: parseListing(r.out), error: null };
  } catch (e) {
    return { node: target.spec, jobs: [], error: (e as Error).message };
  }
}

/** Every node's jobs, in node order. */
export function listJobs(nodes: Target[]): Promise<NodeListing[]> {
  return Promise.all(nodes.map(listNodeJobs));
}

/** The id the next submission takes: one above the highest any node has. */
export function nextJobId(listings: NodeListing[]): number {
  return 1 + Math.max(0, ...listings.flatMap((l) => l.jobs.map((j) => j.id)));
}

/** The highest id any node has (the job `logs` shows when none is named), or null. */
export function latestJobId(listings: NodeListing[]): number | null {
  const ids = listings.flatMap((l) => l.jobs.map((j) => j.id));
  return ids.length ? Math.max(...ids) : null;
}
