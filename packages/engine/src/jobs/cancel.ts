// Stopping a detached job on every node: its whole process group, TERM first and KILL after a grace period, and
// the supervisor left to record CANCELLED (or the record written here when the supervisor is gone).

import { shellQuote, type Target } from '@skysync/transport';
import { capture } from '../cluster/capture.js';
import { JOBS_DIR } from './list.js';

// $1 id. Prints the state the job ended in (after `already` when it had ended before), or `missing`.
const CANCEL = `d=${JOBS_DIR}/$1
[ -d "$d" ] || { echo missing; exit 0; }
s=$(cat "$d/state" 2>/dev/null)
case "$s" in SUCCEEDED|FAILED|CANCELLED|FAILED_DRIVER) echo "already $s"; exit 0;; esac
: > "$d/cancelled"
i=0; while [ ! -s "$d/pgid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
pg=$(cat "$d/pgid" 2>/dev/null)
if [ -n "$pg" ]; then
  kill -s TERM -- "-$pg" 2>/dev/null
  i=0; while kill -0 -- "-$pg" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  kill -s KILL -- "-$pg" 2>/dev/null
fi
i=0; while [ "$(cat "$d/state" 2>/dev/null)" != CANCELLED ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
s=$(cat "$d/state" 2>/dev/null)
if [ "$s" != CANCELLED ] && ! kill -0 "$(cat "$d/supervisor" 2>/dev/null)" 2>/dev/null; then
  date +%s > "$d/ended"; echo CANCELLED > "$d/state"; s=CANCELLED
fi
echo "$s"`;

export interface CancelOutcome {
  node: string;
  /** The state the job is in afterwards, or `missing`. */
  state: string | null;
  /** It had ended (or been cancelled) before. */
  already: boolean;
  error: string | null;
}

export async function cancelOnNode(target: Target, id: number): Promise<CancelOutcome> {
  try {
    const r = await capture(target, `sh -c ${shellQuote(CANCEL)} skysync-cancel ${id}`);
    const last = r.out.trim().split('\n').pop() ?? '';
    const state = last.replace(/^already /, '');
    if (r.code !== 0 || !state) return { node: target.spec, state: null, already: false, error: r.err.trim() || `cancel exited with ${r.code}` };
    return { node: target.spec, state, already: last !== state, error: null };
  } catch (e) {
    return { node: target.spec, state: null, already: false, error: (e as Error).message };
  }
}

/** Cancels job `id` on every node at once, in node order. */
export function cancelJob(nodes: Target[], id: number): Promise<CancelOutcome[]> {
  return Promise.all(nodes.map((t) => cancelOnNode(t, id)));
}
