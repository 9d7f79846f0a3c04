// Running a job on every node of a command at once, each line of its output prefixed with the node.

import type { Target } from '@skysync/transport';
import { runJob, type RemoteJob } from '../run.js';

/** Copies a stream to `out`, each line prefixed (when there is more than one node). */
export function pipeLines(from: NodeJS.ReadableStream, out: NodeJS.WritableStream, prefix: string): Promise<void> {
  return new Promise((resolve) => {
    if (!prefix) {
      from.on('data', (d: Buffer) => out.write(d));
      from.on('end', resolve);
      from.on('close', resolve);
      return;
    }
    let pending = '';
    from.on('data', (d: Buffer) => {
      pending += d.toString('utf8');
      const cut = pending.lastIndexOf('\n');
      if (cut < 0) return;
      const lines = pending.slice(0, cut).split('\n');
      pending = pending.slice(cut + 1);
      out.write(lines.map((l) => `${prefix}${l}\n`).join(''));
    });
    const end = (): void => {
      if (pending) out.write(`${prefix}${pending}\n`);
      pending = '';
      resolve();
    };
    from.on('end', end);
    from.on('close', end);
  });
}

export interface RunRequest {
  nodes: Target[];
  script: string;
  env: Record<string, string>;
  addresses: string[];
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** Runs a script on every node at once; resolves with each node's exit code, in node order. */
export async function runOnNodes(req: RunRequest, onStart?: (jobs: RemoteJob[]) => void): Promise<number[]> {
  const n = req.nodes.length;
  const started = await Promise.allSettled(
    req.nodes.map((t, rank) =>
      runJob(t, req.script, {
        ...req.env,
        SKYPILOT_NODE_RANK: String(rank),
        SKYPILOT_NUM_NODES: String(n),
        SKYPILOT_NODE_IPS: req.addresses.join('\n'),
      }),
    ),
  );
  const failed = started.findIndex((s) => s.status === 'rejected');
  if (failed >= 0) {
    // A job running on some nodes only is no job: stop those, and let their channels close so the connections can end.
    await Promise.all(started.map((s) => (s.status === 'fulfilled' ? abandon(s.value) : undefined)));
    const why = (started[failed] as PromiseRejectedResult).reason as Error;
    throw new Error(`${req.nodes[failed]!.spec}: ${why.message}`);
  }
  const jobs = started.map((s) => (s as PromiseFulfilledResult<RemoteJob>).value);
  onStart?.(jobs);
  return Promise.all(
    jobs.map(async (job, rank) => {
      const prefix = n > 1 ? `(${req.nodes[rank]!.spec}, rank=${rank}) ` : '';
      const piped = Promise.all([pipeLines(job.stdout, req.stdout, prefix), pipeLines(job.stderr, req.stderr, prefix)]);
      const code = await job.exited;
      // Unref'd: a pending timer would hold the process for its full length after the output ended.
      await Promise.race([piped, new Promise((r) => setTimeout(r, 200).unref())]);
      return code;
    }),
  );
}

/** Kills a job whose output nobody will read, drains it so its channel can close, and waits (briefly) for its end. */
async function abandon(job: RemoteJob): Promise<void> {
  job.signal('KILL');
  job.stdout.resume();
  job.stderr.resume();
  await Promise.race([job.exited, new Promise((r) => setTimeout(r, 5000).unref())]);
}
