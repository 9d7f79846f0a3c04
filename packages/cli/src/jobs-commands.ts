// Detached jobs: `exec -d` / `launch -d` start them (after the usual sync), `logs`, `jobs` and `cancel` find them
// again on every node of the target.

import type { Command } from 'commander';
import { cancelJob, latestJobId, listJobs, resolveNodes, startDetached, streamLogs, type JobIdentity, type NodeJob, type NodeListing } from '@skysync/engine';
import type { Target } from '@skysync/transport';
import { nodeSelection, type CommandContext } from './commands.js';
import { EXIT, UsageError } from './exit-codes.js';

interface NodeFlags {
  headOnly?: boolean;
  nodes?: string;
}

/** What `exec -d` and `launch -d` need from the command that synced: the nodes and the job's pieces. */
export interface DetachInput {
  nodes: Target[];
  /** launch's setup (runs first, in the same job; a failure ends it with setup's code). */
  setup?: string | null;
  run?: string | null;
  env: Record<string, string>;
  addresses: string[];
  cwd?: string;
  json?: boolean;
  targetSpec: string;
  /** SkyPilot's job variables (task id, cluster info, GPUs per node). */
  job?: JobIdentity;
  /** The task's FUSE mount paths: the barrier runs after setup and after run, inside the job. */
  fusePaths?: string[];
}

/** Starts the job detached on every node and says its id; the exit code is 0 once every node has it. */
export async function startDetachedCommand(ctx: CommandContext, input: DetachInput): Promise<number> {
  // Each phase in a subshell, then the barrier for the task's mounts; the phase's exit code is the job's, and a
  // failed barrier after a phase that succeeded fails the job.
  const phase = (script: string): string => `(\n${script}\n)\nc=$?; skysync_flush || { [ $c -eq 0 ] && c=1; }; [ $c -eq 0 ] || exit $c`;
  const parts = input.fusePaths?.length
    ? [...(input.setup ? [phase(input.setup)] : []), ...(input.run ? [phase(input.run)] : [])]
    : [...(input.setup ? [`(\n${input.setup}\n) || exit $?`] : []), ...(input.run ? [input.run] : [])];
  if (!input.run) {
    ctx.print('note: the task has no run command; synced only');
    return EXIT.ok;
  }
  const r = await startDetached({
    nodes: input.nodes,
    script: parts.join('\n'),
    name: input.run,
    env: input.env,
    addresses: input.addresses,
    cwd: input.cwd,
    job: input.job,
    barrierPaths: input.fusePaths,
  });
  const failed = r.errors.map((e, i) => (e ? `${input.nodes[i]!.spec}: ${e}` : null)).filter((e): e is string => !!e);
  for (const f of failed) ctx.print(`error: ${f}`);
  if (input.json) process.stdout.write(JSON.stringify({ jobId: r.id, nodes: input.nodes.map((t, i) => ({ node: t.spec, error: r.errors[i] })) }) + '\n');
  ctx.print(`Job submitted, ID: ${r.id}${failed.length ? ` (not started on ${failed.length} node(s))` : ''}`);
  ctx.print(`  skysync logs ${input.targetSpec} ${r.id} -f     follow its output`);
  ctx.print(`  skysync cancel ${input.targetSpec} ${r.id}      stop it on every node`);
  return failed.length ? EXIT.failure : EXIT.ok;
}

function nodeOptions(c: Command): Command {
  return c.option('--head-only', 'only the head node, not the `TARGET-workerN` hosts of the SSH config').option('--nodes <list>', 'exactly these nodes, comma-separated');
}

function jobId(s: string): number {
  if (!/^\d+$/.test(s)) throw new UsageError(`${JSON.stringify(s)} is not a job id (a number, as \`skysync jobs\` lists them)`);
  return Number(s);
}

async function withNodes<T>(ctx: CommandContext, targetSpec: string, flags: NodeFlags, fn: (nodes: Target[]) => Promise<T>): Promise<T> {
  const nodes = await resolveNodes(targetSpec, nodeSelection(flags), ctx.targetOptions());
  for (const t of nodes) t.retain();
  try {
    return await fn(nodes);
  } finally {
    await Promise.all(nodes.map((t) => t.close().catch(() => {})));
  }
}

function reportUnreachable(ctx: CommandContext, listings: NodeListing[]): boolean {
  for (const l of listings) if (l.error) ctx.print(`${l.node}: error: ${l.error}`);
  return listings.some((l) => l.error);
}

/** A job as the nodes that run it see it, in rank order. */
interface ClusterJob {
  id: number;
  nodes: Array<{ node: string } & NodeJob>;
}

function clusterJobs(listings: NodeListing[]): ClusterJob[] {
  const byId = new Map<number, ClusterJob>();
  for (const l of listings) {
    for (const j of l.jobs) {
      const job = byId.get(j.id) ?? { id: j.id, nodes: [] };
      job.nodes.push({ node: l.node, ...j });
      byId.set(j.id, job);
    }
  }
  for (const j of byId.values()) j.nodes.sort((a, b) => a.rank - b.rank);
  return [...byId.values()].sort((a, b) => a.id - b.id);
}

const STATE_ORDER = ['FAILED_DRIVER', 'CANCELLED', 'FAILED', 'RUNNING', 'PENDING', 'SUCCEEDED'];

/** One state for the job: a node that failed or is still running decides over one that succeeded. */
function overallState(job: ClusterJob): string {
  return STATE_ORDER.find((s) => job.nodes.some((n) => n.state === s)) ?? job.nodes[0]!.state;
}

/** The first non-zero exit code by rank, 0 when every node succeeded, null while any is running. */
function overallExit(job: ClusterJob): number | null {
  if (job.nodes.some((n) => n.exitCode === null)) return job.nodes.find((n) => n.exitCode)?.exitCode ?? null;
  return job.nodes.find((n) => n.exitCode !== 0)?.exitCode ?? 0;
}

function when(epoch: number | null): string {
  if (epoch === null) return '-';
  const d = new Date(epoch * 1000);
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function printJobs(jobs: ClusterJob[]): void {
  const header = ['ID', 'STATE', 'EXIT', 'SUBMITTED', 'COMMAND'];
  const rows = jobs.map((j) => {
    const code = overallExit(j);
    return { job: j, cells: [String(j.id), overallState(j), code === null ? '-' : String(code), when(j.nodes[0]!.submitted), j.nodes[0]!.name] };
  });
  const width = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r.cells[c]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i < cells.length - 1 ? c.padEnd(width[i]!) : c))
      .join('  ')
      .trimEnd();
  const out = [line(header)];
  for (const { job, cells } of rows) {
    out.push(line(cells));
    // A job of several nodes: each node's own state, so a rank that failed or still runs is seen.
    if (job.nodes.length > 1)
      for (const n of job.nodes) out.push(`${''.padEnd(width[0]!)}  ${n.node} (rank ${n.rank}): ${n.state}${n.exitCode === null ? '' : `, exit ${n.exitCode}`}`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

function addJobs(program: Command, ctx: CommandContext): void {
  nodeOptions(program.command('jobs').description('list the detached jobs on TARGET (every node): state and exit codes'))
    .argument('<target>', 'an SSH alias (with its -workerN hosts), user@host[:port], or local:DIR')
    .option('--json', 'print one JSON object')
    .action(async (targetSpec: string, flags: NodeFlags & { json?: boolean }) => {
      process.exitCode = await withNodes(ctx, targetSpec, flags, async (nodes) => {
        const listings = await listJobs(nodes);
        const bad = reportUnreachable(ctx, listings);
        const jobs = clusterJobs(listings);
        if (flags.json) {
          const shaped = jobs.map((j) => ({
            id: j.id,
            state: overallState(j),
            exitCode: overallExit(j),
            submitted: j.nodes[0]!.submitted,
            command: j.nodes[0]!.name,
            nodes: j.nodes,
          }));
          process.stdout.write(JSON.stringify({ jobs: shaped }) + '\n');
        } else if (jobs.length) printJobs(jobs);
        else ctx.print(`no detached jobs on ${targetSpec}`);
        return bad ? EXIT.failure : EXIT.ok;
      });
    });
}

function addLogs(program: Command, ctx: CommandContext): void {
  nodeOptions(program.command('logs').description("a detached job's output from every node (the latest job unless JOB is given)"))
    .argument('<target>', 'an SSH alias (with its -workerN hosts), user@host[:port], or local:DIR')
    .argument('[job]', 'the job id (`skysync jobs TARGET` lists them)')
    .option('-f, --follow', "follow the output until the job ends, then exit with the job's exit code")
    .action(async (targetSpec: string, job: string | undefined, flags: NodeFlags & { follow?: boolean }) => {
      process.exitCode = await withNodes(ctx, targetSpec, flags, async (nodes) => {
        const listings = await listJobs(nodes);
        if (reportUnreachable(ctx, listings)) return EXIT.failure;
        const id = job === undefined ? latestJobId(listings) : jobId(job);
        if (id === null) throw new UsageError(`no detached jobs on ${targetSpec}`);
        const running = nodes.flatMap((target, i) => listings[i]!.jobs.filter((j) => j.id === id).map((j) => ({ target, rank: j.rank })));
        if (!running.length) throw new UsageError(`no job ${id} on ${targetSpec}`);
        running.sort((a, b) => a.rank - b.rank);
        const logs = await streamLogs({ nodes: running, id, follow: !!flags.follow, prefixed: running.length > 1, stdout: process.stdout, stderr: process.stderr });
        // Ctrl-C leaves the job running: it only stops reading.
        const stop = (): void => logs.stop();
        process.once('SIGINT', stop);
        try {
          const codes = await logs.exited;
          return codes.find((c) => c !== 0) ?? 0;
        } finally {
          process.off('SIGINT', stop);
        }
      });
    });
}

function addCancel(program: Command, ctx: CommandContext): void {
  nodeOptions(program.command('cancel').description("stop detached jobs on every node of TARGET (each job's whole process group)"))
    .argument('<target>', 'an SSH alias (with its -workerN hosts), user@host[:port], or local:DIR')
    .argument('<job...>', 'job ids')
    .action(async (targetSpec: string, ids: string[], flags: NodeFlags) => {
      const wanted = ids.map(jobId);
      process.exitCode = await withNodes(ctx, targetSpec, flags, async (nodes) => {
        let code: number = EXIT.ok;
        for (const id of wanted) {
          const outcomes = await cancelJob(nodes, id);
          const present = outcomes.filter((o) => o.state !== 'missing');
          for (const o of present)
            ctx.print(
              o.error
                ? `${o.node}: error: ${o.error}`
                : `${o.node}: job ${id} ${o.already ? `had already ended (${o.state})` : o.state === 'CANCELLED' ? 'cancelled' : `ended before it could be cancelled (${o.state})`}`,
            );
          if (!present.length) ctx.print(`no job ${id} on ${targetSpec}`);
          if (!present.length || present.some((o) => o.error)) code = EXIT.failure;
        }
        return code;
      });
    });
}

/** Registers `jobs`, `logs` and `cancel`. */
export function addJobCommands(program: Command, ctx: CommandContext): void {
  addJobs(program, ctx);
  addLogs(program, ctx);
  addCancel(program, ctx);
}
