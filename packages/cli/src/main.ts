import os from 'node:os';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { loadNative, type NativeAddon } from '@skysync/chunking';
import { push, pull, pushWithRsync, checkSource, CLIENT_VERSION, type PushStats } from '@skysync/engine';
import { NoAgentError, SshTarget, parseTarget } from '@skysync/transport';
import type { DeleteMode } from '@skysync/protocol';
import { EXIT, UsageError } from './exit-codes.js';
import { Progress, formatBytes, summaryLines } from './output.js';

function native(): NativeAddon {
  const n = loadNative();
  if (!n) throw new Error('the native addon is not built for this machine; run `pnpm build` (or `pnpm setup`) first');
  return n;
}

interface PushFlags {
  transport?: 'auto' | 'agent' | 'rsync';
  workdir?: string;
  dest: string;
  delete?: boolean;
  dryRun?: boolean;
  json?: boolean;
  quiet?: boolean;
}

/** Splits `TARGET:PATH`, keeping `local:DIR:PATH` whole on the left. */
export function splitRemote(spec: string): { target: string; path: string } {
  const m = spec.startsWith('local:') ? /^(local:[^:]+):(.+)$/.exec(spec) : /^([^:]+):(.+)$/.exec(spec);
  if (!m) throw new UsageError(`${JSON.stringify(spec)}: expected TARGET:PATH, e.g. dev:~/sky_workdir/outputs or local:/tmp/node:outputs`);
  return { target: m[1]!, path: m[2]! };
}

function deleteMode(flags: PushFlags): DeleteMode {
  if (flags.delete === true) return 'mirror';
  if (flags.delete === false) return 'none';
  return 'placed';
}

function targetOptions(program: Command): { configFile?: string; installNode: boolean; nodeUrl?: string; log: (m: string) => void } {
  const o = program.opts<{ sshConfig?: string; installNode: boolean; nodeUrl?: string }>();
  return { configFile: o.sshConfig, installNode: o.installNode !== false, nodeUrl: o.nodeUrl, log: (m) => print(m) };
}

function print(line: string): void {
  process.stderr.write(line + '\n');
}

function exitFor(s: { failed: unknown[] }): number {
  return s.failed.length ? EXIT.partial : EXIT.ok;
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('skysync')
    .description('Fast, exact sync of code and data to remote machines (SkyPilot workdir semantics).')
    .version(CLIENT_VERSION)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .showHelpAfterError('(run with --help for usage)')
    .option('-F, --ssh-config <file>', 'read this SSH config instead of ~/.ssh/config (like ssh -F; env SKYSYNC_SSH_CONFIG)')
    .option('--no-install-node', 'never provision Node on a remote that lacks it (then rsync is used)')
    .option('--node-url <url>', 'where a remote downloads Node from ({version}, {os}, {arch} are filled in; env SKYSYNC_NODE_URL)');

  program
    .command('push')
    .description('sync a working directory into ~/sky_workdir on TARGET (only what changed moves)')
    .argument('[target]', 'an SSH alias, user@host[:port], ssh://user@host[:port], or local:DIR (DIR plays the remote home); default local:~/.skysync/local')
    .option('-w, --workdir <dir>', 'directory to sync (default: the current directory)')
    .option('--dest <path>', 'remote destination', '~/sky_workdir')
    .addOption(new Option('--delete', 'make an exact mirror: also remove remote files that are not in the source (ignored paths excepted)'))
    .addOption(new Option('--no-delete', "never remove anything on the remote (SkyPilot's behaviour)"))
    .option('-n, --dry-run', 'list what would change, change nothing')
    .option('--json', 'print one JSON object with the statistics at the end')
    .option('-q, --quiet', 'no summary')
    .addOption(
      new Option('--transport <how>', 'agent: the skysync agent only; rsync: rsync over ssh with SkyPilot\'s flags; auto: the agent, or rsync where it cannot run')
        .choices(['auto', 'agent', 'rsync'])
        .default('auto'),
    )
    .addHelpText(
      'after',
      `
By default a push removes on the remote what skysync placed there and you have since deleted or started
ignoring; files that jobs wrote are never removed.

Examples:
  skysync push dev                              push the current directory to the host \`dev\` of ~/.ssh/config
  skysync -F ./ssh_config push ubuntu@10.0.0.5:2222 -w ~/proj
  skysync push local:/tmp/node1                 push to a local directory playing the remote's home
  skysync push local:/tmp/node1 -w ~/proj --json
  skysync push local:/tmp/node1 --dry-run       list what would change`,
    )
    .action(async (targetSpec: string | undefined, flags: PushFlags) => {
      targetSpec ??= `local:${path.join(os.homedir(), '.skysync', 'local')}`;
      const source = path.resolve(flags.workdir ?? '.');
      await checkSource(source);
      const target = parseTarget(targetSpec, targetOptions(program));
      const tty = process.stderr.isTTY && !flags.json;
      const progress = new Progress(!!tty);
      const viaRsync = async (why: string): Promise<PushStats> => {
        if (!(target instanceof SshTarget)) throw new UsageError('--transport rsync needs an SSH target');
        print(`using rsync over ssh: ${why}`);
        return pushWithRsync({ source, target, dest: flags.dest, deleteMode: deleteMode(flags), native: native(), dryRun: !!flags.dryRun });
      };
      const viaAgent = () => push({
        source,
        target,
        dest: flags.dest,
        deleteMode: deleteMode(flags),
        dryRun: !!flags.dryRun,
        native: native(),
        onEvent: (e) => {
          if (e.type === 'warning') {
            progress.clear();
            print(`warning: ${e.message}`);
          } else if (e.type === 'progress') {
            progress.update(`sending ${e.filesSent}/${e.filesTotal} entries, ${formatBytes(e.bytesLiteral)} literal, ${formatBytes(e.bytesWire)} on the wire`);
          } else if (e.type === 'scanned' && !flags.json) {
            const line = `scanned ${e.files} files; ${e.changes} entries changed`;
            // Not a terminal: plain lines, one per phase, instead of a redrawn progress line.
            if (tty) progress.update(line);
            else if (!flags.quiet) print(line);
          }
        },
      });
      let stats: PushStats;
      if (flags.transport === 'rsync') stats = await viaRsync('--transport rsync');
      else {
        try {
          stats = await viaAgent();
        } catch (e) {
          if (!(e instanceof NoAgentError) || flags.transport === 'agent') throw e;
          stats = await viaRsync(`${e.message} (rsync fallback: files skysync placed are not tracked, deletions only with --delete)`);
        }
      }
      progress.clear();
      report(stats, flags);
      process.exitCode = exitFor(stats);
    });

  program
    .command('pull')
    .description('bring a remote file or directory back (only missing chunks move)')
    .argument('<remote>', 'TARGET:PATH, e.g. dev:~/sky_workdir/outputs, dev-worker1:/tmp/x or local:/tmp/node1:sky_workdir/outputs')
    .argument('<local>', 'local path: a directory receives the contents of a remote directory')
    .option('--json', 'print one JSON object with the statistics at the end')
    .option('-q, --quiet', 'no summary')
    .addHelpText(
      'after',
      `
Examples:
  skysync pull local:/tmp/node1:sky_workdir/outputs ./outputs
  skysync pull local:/tmp/node1:checkpoints/last.pt ./last.pt --json`,
    )
    .action(async (remote: string, local: string, flags: { json?: boolean; quiet?: boolean }) => {
      const { target: targetSpec, path: remotePath } = splitRemote(remote);
      const stats = await pull({ target: parseTarget(targetSpec, targetOptions(program)), remotePath, localPath: local, native: native() });
      if (flags.json) process.stdout.write(JSON.stringify(stats) + '\n');
      else if (!flags.quiet) for (const l of summaryLines(stats)) print(l);
      for (const f of stats.failed) print(`failed: ${f.path}: ${f.error}`);
      process.exitCode = exitFor(stats);
    });
  return program;
}

function report(stats: PushStats, flags: PushFlags): void {
  if (stats.dryRun && !flags.json) {
    for (const c of stats.changes ?? []) process.stdout.write(`${c.status.padEnd(11)} ${c.kind === 'dir' ? c.path + '/' : c.path}\n`);
  }
  for (const f of stats.failed) print(`failed: ${f.path}: ${f.error}`);
  for (const k of stats.kept) print(`kept: ${k} (changed on the remote or holds files skysync did not place)`);
  if (stats.drift.length) print(`note: ${stats.drift.length} file(s) changed on the remote were overwritten with your local version`);
  if (flags.json) {
    process.stdout.write(JSON.stringify(stats) + '\n');
  } else if (!flags.quiet) {
    for (const l of summaryLines(stats)) print(l);
  }
}

export async function run(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0) return EXIT.ok;
      return EXIT.usage;
    }
    const err = e as Error;
    print(`skysync: ${err.message}`);
    return err instanceof UsageError || err.name === 'TargetError' ? EXIT.usage : EXIT.failure;
  }
}
