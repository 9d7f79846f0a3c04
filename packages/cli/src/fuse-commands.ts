// Storage MOUNT and MOUNT_CACHED from the command line: `skysync flush TARGET [MOUNT...]` (the barrier by hand),
// `skysync unmount TARGET [MOUNT...]` (flushes first), and the barrier that exec and launch run after setup and
// after run, which keeps the job's exit code and says what it waits for.

import type { Command } from 'commander';
import { type FuseEvent, type FuseNodeResult, resolveNodes, settleOnNodes } from '@skysync/engine';
import type { Target } from '@skysync/transport';
import { type CommandContext, nodeSelection } from './commands.js';
import { EXIT } from './exit-codes.js';
import { wrapped } from './help.js';
import { formatBytes } from './output.js';

/** What the barrier printed, one line per event worth a line; progress at most once a second per mount. */
function describe(e: FuseEvent, who: string): string | null {
  switch (e.event) {
    case 'flushing':
      return `${who}flushing ${e.path}: ${e.files} file${e.files === 1 ? '' : 's'} to upload${e.bytesInFlight ? `, ${formatBytes(e.bytesInFlight)} in flight` : ''}${e.bytesPerSecond ? `, ${formatBytes(e.bytesPerSecond)}/s` : ''}`;
    case 'flushed':
      return e.uploads ? `${who}${e.path}: every write is in the bucket (waited ${(e.waitedMs / 1000).toFixed(1)} s)` : null;
    case 'unmounted':
      return `${who}${e.path}: unmounted`;
    default:
      return null;
  }
}

export async function settle(
  ctx: Pick<CommandContext, 'print'>,
  nodes: Target[],
  verb: 'flush' | 'unmount',
  only: string[],
  options: { mountedOnly?: boolean; quiet?: boolean } = {},
): Promise<FuseNodeResult[]> {
  const many = nodes.length > 1;
  const results = await settleOnNodes(nodes, verb, only, {
    mountedOnly: options.mountedOnly,
    onEvent: (e, i) => {
      const line = options.quiet && e.event !== 'unmounted' ? null : describe(e, many ? `${nodes[i]!.spec}: ` : '');
      if (line) ctx.print(line);
    },
  });
  for (const r of results) for (const error of r.errors) ctx.print(`skysync: ${error}`);
  return results;
}

/**
 * The barrier after a job phase: waits for the writes under the task's FUSE mounts on every node. Returns the
 * code the command ends with: the job's own when it failed, else failure when the barrier did.
 */
export async function barrier(ctx: Pick<CommandContext, 'print'>, nodes: Target[], paths: string[], jobCode: number, quiet?: boolean): Promise<number> {
  if (!paths.length) return jobCode;
  const results = await settle(ctx, nodes, 'flush', paths, { mountedOnly: true, quiet });
  const failed = results.some((r) => r.errors.length);
  return jobCode || (failed ? EXIT.failure : 0);
}

function addSettleCommand(program: Command, ctx: CommandContext, verb: 'flush' | 'unmount', description: string, examples: string): void {
  program
    .command(verb)
    .description(description)
    .argument('<target>', 'an SSH alias (with its -workerN hosts), user@host[:port], or local:DIR')
    .argument('[mount...]', 'mount paths as the task writes them (default: every skysync mount on the nodes)')
    .option('--head-only', 'only the head node')
    .option('--nodes <list>', 'exactly these nodes, comma-separated')
    .addHelpText('after', wrapped(examples))
    .action(async (targetSpec: string, mounts: string[], flags: { headOnly?: boolean; nodes?: string }) => {
      const nodes = await resolveNodes(targetSpec, nodeSelection(flags), ctx.targetOptions());
      try {
        const results = await settle(ctx, nodes, verb, mounts);
        const failed = results.some((r) => r.errors.length);
        if (!failed && verb === 'flush') {
          const flushed = results.reduce((a, r) => a + r.events.filter((e) => e.event === 'flushed').length, 0);
          ctx.print(flushed ? `flushed: ${flushed} mount${flushed === 1 ? '' : 's'}, nothing left to upload` : 'no skysync mounts to flush');
        }
        if (!failed && verb === 'unmount' && !results.some((r) => r.events.some((e) => e.event === 'unmounted'))) ctx.print('no skysync mounts to unmount');
        process.exitCode = failed ? EXIT.failure : EXIT.ok;
      } finally {
        await Promise.all(nodes.map((t) => t.close().catch(() => {})));
      }
    });
}

export function addFuseCommands(program: Command, ctx: CommandContext): void {
  addSettleCommand(
    program,
    ctx,
    'flush',
    'wait until every write under the Storage MOUNT / MOUNT_CACHED mounts on TARGET is in its bucket',
    `
exec and launch run this barrier by themselves after setup and after run, for the task's mounts. A mount whose
rclone was killed is restarted on its cache first, so the writes it had queued go up too.

Examples:
  skysync flush dev                 every skysync mount on dev and its workers
  skysync flush dev /checkpoints    one mount`,
  );
  addSettleCommand(
    program,
    ctx,
    'unmount',
    'flush, then unmount the Storage MOUNT / MOUNT_CACHED mounts on TARGET (every node) and drop their caches',
    `
Nothing is unmounted while a write under it is not yet in the bucket, or while a process still uses it.

Examples:
  skysync unmount dev
  skysync unmount dev /checkpoints`,
  );
}
