// Running a job on every node of a command at once, each line of its output prefixed with the node.

import type { Readable } from 'node:stream';
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
  /** What SkyPilot tells a job about its cluster and itself (`skypilotEnv`), besides the rank variables. */
  job?: JobIdentity;
  /** Where the job runs: where its workdir was pushed (default ~/sky_workdir). */
  cwd?: string;
  /** Fed to the head's job (rank 0); the others read nothing. */
  stdin?: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export interface JobIdentity {
  cluster: string;
  taskId: string;
  gpusPerNode: number;
}

/** A task id shaped as SkyPilot's: `sky-YYYY-MM-DD-HH-MM-SS-ffffff_<cluster>_<job>`. */
export function taskId(cluster: string, job = 1, now = new Date()): string {
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  const stamp = `${now.getFullYear()}-${p(now.getMonth() + 1)}-${p(now.getDate())}-${p(now.getHours())}-${p(now.getMinutes())}-${p(now.getSeconds())}-${p(now.getMilliseconds() * 1000, 6)}`;
  return `sky-${stamp}_${cluster}_${job}`;
}

// Python's output reaches the terminal line by line, not when the job exits (SkyPilot sets it too); a task may
// still say otherwise.
const UNBUFFERED = { PYTHONUNBUFFERED: '1' };

/** A flat object as Python's json.dumps writes it (", " and ": "), for jobs that compare it as text. */
function pythonJson(o: Record<string, string | null>): string {
  return `{${Object.entries(o)
    .map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`)
    .join(', ')}}`;
}

/** Everything a node's job sees: the task's envs and SkyPilot's per-node variables (attached and detached jobs). */
export function nodeEnv(req: Pick<RunRequest, 'nodes' | 'env' | 'addresses' | 'job'>, rank: number): Record<string, string> {
  return { ...UNBUFFERED, ...req.env, ...skypilotEnv(req, rank) };
}

/** The variables SkyPilot gives every job, with the same shapes. */
export function skypilotEnv(req: Pick<RunRequest, 'nodes' | 'addresses' | 'job'>, rank: number): Record<string, string> {
  const job = req.job;
  return {
    SKYPILOT_NODE_RANK: String(rank),
    SKYPILOT_NUM_NODES: String(req.nodes.length),
    SKYPILOT_NODE_IPS: req.addresses.join('\n'),
    ...(job
      ? {
          SKYPILOT_NUM_GPUS_PER_NODE: String(job.gpusPerNode),
          SKYPILOT_TASK_ID: job.taskId,
          SKYPILOT_CLUSTER_INFO: pythonJson({ cluster_name: job.cluster, cloud: null, region: null, zone: null }),
        }
      : {}),
  };
}

/** Runs a script on every node at once; resolves with each node's exit code, in node order. */
export async function runOnNodes(req: RunRequest, onStart?: (jobs: RemoteJob[]) => void): Promise<number[]> {
  const n = req.nodes.length;
  const started = await Promise.allSettled(
    req.nodes.map((t, rank) => runJob(t, req.script, nodeEnv(req, rank), { cwd: req.cwd, stdin: rank === 0 ? (req.stdin as Readable | undefined) : undefined })),
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
