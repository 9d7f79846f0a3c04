// `skysync pull`: one node's file or directory, or (--all-nodes) the same path from every node of a cluster.

import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { checkHostKnown, pull, resolveNodes, type PullStats } from '@skysync/engine';
import { parseTarget, type Target } from '@skysync/transport';
import type { CommandContext } from './commands.js';
import { EXIT, UsageError } from './exit-codes.js';
import { compactLine, summaryLines } from './output.js';
import { showBoard, stderrBoard, type ProgressBoard } from './progress.js';
import { wrapped } from './help.js';
import { exitOnInterrupt, interruptedMessage } from './interrupt.js';

interface PullFlags {
  json?: boolean;
  quiet?: boolean;
  mkdir?: boolean;
  allNodes?: boolean;
}

/** Splits `TARGET:PATH`, keeping `local:DIR:PATH` whole on the left. */
export function splitRemote(spec: string): { target: string; path: string } {
  const m = spec.startsWith('local:') ? /^(local:[^:]+):(.+)$/.exec(spec) : /^([^:]+):(.+)$/.exec(spec);
  if (!m) throw new UsageError(`${JSON.stringify(spec)}: expected TARGET:PATH, e.g. dev:~/sky_workdir/outputs or local:/tmp/node:outputs`);
  return { target: m[1]!, path: m[2]! };
}

/** As `rsync --mkpath`: the directory LOCAL goes into must exist, unless --mkdir says to create it. */
export function checkLocalParent(local: string, mkdir: boolean | undefined): void {
  const parent = path.dirname(path.resolve(local));
  if (mkdir) {
    fs.mkdirSync(parent, { recursive: true });
    return;
  }
  const st = fs.statSync(parent, { throwIfNoEntry: false });
  if (!st) throw new UsageError(`${local}: the directory ${parent} does not exist; create it, or add --mkdir`);
  if (!st.isDirectory()) throw new UsageError(`${local}: ${parent} is not a directory`);
}

export function addPull(program: Command, ctx: CommandContext): void {
  program
    .command('pull')
    .description('bring a remote file or directory back (only missing chunks move)')
    .argument('<remote>', 'TARGET:PATH, e.g. dev:~/sky_workdir/outputs, dev-worker1:/tmp/x or local:/tmp/node1:sky_workdir/outputs')
    .argument('<local>', 'local path: a directory receives the contents of a remote directory')
    .option('--all-nodes', 'from every node of the cluster (TARGET and its -workerN hosts), each into LOCAL/<node>/')
    .option('--mkdir', "create LOCAL's parent directories when missing (as rsync --mkpath)")
    .option('--json', 'print one JSON object with the statistics at the end')
    .option('-q, --quiet', 'no progress, no summary')
    .addHelpText(
      'after',
      wrapped(`
Examples:
  skysync pull local:/tmp/node1:sky_workdir/outputs ./outputs
  skysync pull local:/tmp/node1:checkpoints/last.pt ./last.pt --json
  skysync pull dev:~/sky_workdir/logs ./logs --all-nodes   ./logs/dev, ./logs/dev-worker1, ...`),
    )
    .action(async (remote: string, local: string, flags: PullFlags) => {
      process.exitCode = await pullCommand(ctx, remote, local, flags);
    });
}

async function pullCommand(ctx: CommandContext, remote: string, local: string, flags: PullFlags): Promise<number> {
  const { target: targetSpec, path: remotePath } = splitRemote(remote);
  const topts = ctx.targetOptions();
  await checkHostKnown(targetSpec, topts.configFile);
  checkLocalParent(local, flags.mkdir);
  const nodes = flags.allNodes ? await resolveNodes(targetSpec, {}, topts) : [parseTarget(targetSpec, topts)];
  const board = stderrBoard(flags.quiet || flags.json);
  showBoard(board);
  let results: Array<PullStats | Error>;
  const from = flags.allNodes ? `${nodes.length} nodes` : targetSpec;
  const stopWatching = exitOnInterrupt(interruptedMessage(`the pull of ${remotePath} from ${from}`, 'the pull'), () => board.finish(), ctx.print);
  try {
    if (flags.allNodes) fs.mkdirSync(local, { recursive: true });
    results = await Promise.all(
      nodes.map((t) => {
        const into = flags.allNodes ? path.join(local, nodeDir(t)) : local;
        if (flags.allNodes) fs.mkdirSync(into, { recursive: true });
        return pullFrom(t, remotePath, into, ctx, board, flags.allNodes ? t.spec : remotePath).catch((e: Error) => e);
      }),
    );
  } finally {
    stopWatching();
    board.finish();
    showBoard(null);
  }
  return report(nodes, results, flags, ctx.print);
}

/** A node's directory under LOCAL: its name, made safe as one path component. */
function nodeDir(t: Target): string {
  return t.spec.replace(/[/\\:]/g, '_');
}

async function pullFrom(t: Target, remotePath: string, into: string, ctx: CommandContext, board: ProgressBoard, label: string): Promise<PullStats> {
  try {
    return await pull({ target: t, remotePath, localPath: into, native: ctx.native(), onProgress: (p) => board.bytes(t.spec, label, p.bytesDone, p.bytesTotal) });
  } finally {
    await t.close().catch(() => {});
  }
}

function report(nodes: Target[], results: Array<PullStats | Error>, flags: PullFlags, print: (l: string) => void): number {
  const many = !!flags.allNodes;
  // A pull counts only the files it wrote as changed; the summary counts failed ones apart from those.
  const summarized = (s: PullStats) => ({ ...s, filesChanged: s.filesChanged + s.failed.length });
  const single = results[0];
  if (!many && single instanceof Error) throw single;
  results.forEach((r, i) => {
    const who = many ? `${nodes[i]!.spec}: ` : '';
    if (r instanceof Error) {
      print(`${who}error: ${r.message}`);
      return;
    }
    for (const f of r.failed) print(`${who}failed: ${f.path}: ${f.error}`);
    if (flags.json || flags.quiet) return;
    if (many) print(compactLine(nodes[i]!.spec, summarized(r)));
    else for (const l of summaryLines(summarized(r))) print(l);
  });
  const failed = results.some((r) => !(r instanceof Error) && r.failed.length);
  const code = results.some((r) => r instanceof Error) ? EXIT.failure : failed ? EXIT.partial : EXIT.ok;
  if (flags.json) {
    const json = many
      ? { nodes: results.map((r, i) => (r instanceof Error ? { node: nodes[i]!.spec, error: r.message } : { node: nodes[i]!.spec, ...r })), exitCode: code }
      : single;
    process.stdout.write(JSON.stringify(json) + '\n');
  }
  return code;
}
