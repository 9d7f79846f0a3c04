// A detached job's output from every node that runs it: what its log holds so far, or (follow) everything until
// the job ends, then the job's exit code as the remote command's.

import { shellQuote, type Target } from '@skysync/transport';
import { pipeLines } from '../cluster/run-nodes.js';
import { JOBS_DIR } from './list.js';

// $1 id, $2 1 to follow. tail stops by itself once the supervisor (which outlives the job by one write) is gone.
const LOGS = `d=${JOBS_DIR}/$1
[ -d "$d" ] || { echo "no job $1 here" >&2; exit 125; }
if [ "$2" != 1 ]; then cat "$d/log" 2>/dev/null; exit 0; fi
i=0; while { [ ! -s "$d/supervisor" ] || [ ! -e "$d/log" ]; } && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
sup=$(cat "$d/supervisor" 2>/dev/null)
if [ -n "$sup" ] && kill -0 "$sup" 2>/dev/null; then tail -n +1 -s 0.2 -f --pid="$sup" "$d/log"; else cat "$d/log" 2>/dev/null; fi
i=0; while [ ! -s "$d/exit" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -s "$d/exit" ] || { echo "job $1 ended without recording its exit code" >&2; exit 255; }
exit "$(cat "$d/exit")"`;

export interface LogsRequest {
  /** The nodes that run the job, each with the rank it has in it. */
  nodes: Array<{ target: Target; rank: number }>;
  id: number;
  follow: boolean;
  /** Prefix each line with `(node, rank=N)` (when the job ran on more than one node). */
  prefixed: boolean;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export interface LogsHandle {
  /** Each node's code, in the order given: the job's exit code when following, else 0 (255: connection lost). */
  exited: Promise<number[]>;
  /** Stops reading (the job goes on). */
  stop(): void;
}

export async function streamLogs(req: LogsRequest): Promise<LogsHandle> {
  const procs = await Promise.all(req.nodes.map(({ target }) => target.exec(`sh -c ${shellQuote(LOGS)} skysync-logs ${req.id} ${req.follow ? 1 : 0}`)));
  const exited = Promise.all(
    procs.map(async (proc, i) => {
      proc.stdin.end();
      const { target, rank } = req.nodes[i]!;
      const prefix = req.prefixed ? `(${target.spec}, rank=${rank}) ` : '';
      const piped = Promise.all([pipeLines(proc.stdout, req.stdout, prefix), pipeLines(proc.stderr, req.stderr, prefix)]);
      const code = await proc.exited;
      await Promise.race([piped, new Promise((r) => setTimeout(r, 200).unref())]);
      return code ?? 255;
    }),
  );
  return {
    exited,
    stop: () => {
      for (const p of procs) p.stdin.destroy();
    },
  };
}
