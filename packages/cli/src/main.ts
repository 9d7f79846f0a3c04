import { Command, CommanderError, Option } from 'commander';
import { loadNative, type NativeAddon } from '@skysync/chunking';
import { resolveNodes, CLIENT_VERSION, compressLevel } from '@skysync/engine';
import { LocalTarget, SshTarget, controlShutdownAll } from '@skysync/transport';
import fs from 'node:fs';
import { commandWithoutDashes, execCommand, nodeSelection, pushCommand, type CommandContext, type SyncFlags } from './commands.js';
import { EXIT, UsageError } from './exit-codes.js';
import { addJobCommands } from './jobs-commands.js';
import { printLine } from './progress.js';
import { addStorage } from './storage-commands.js';
import { addFuseCommands } from './fuse-commands.js';
import { addPull } from './pull-command.js';
import { addHelpFooters, helpWidth, wrapped } from './help.js';

export { splitRemote } from './pull-command.js';

function native(): NativeAddon {
  const n = loadNative();
  if (!n) throw new Error('the native addon is not built for this machine; run `pnpm build` (or `pnpm setup`) first');
  return n;
}

function targetOptions(program: Command): { configFile?: string; installNode: boolean; nodeUrl?: string; log: (m: string) => void } {
  const o = program.opts<{ sshConfig?: string; installNode: boolean; nodeUrl?: string }>();
  return { configFile: o.sshConfig, installNode: o.installNode !== false, nodeUrl: o.nodeUrl, log: (m) => print(m) };
}

function print(line: string): void {
  printLine(line);
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('skysync')
    .description('Fast, exact sync of code and data to remote machines (SkyPilot workdir semantics).')
    .version(CLIENT_VERSION)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    // Commander keeps a description column narrower than 40 unwrapped; an 80-column terminal leaves ~50 at most.
    .configureHelp({ helpWidth: helpWidth(), minWidthToWrap: 20 })
    .showHelpAfterError('(run with --help for usage)')
    .option('-F, --ssh-config <file>', 'read this SSH config instead of ~/.ssh/config (like ssh -F; env SKYSYNC_SSH_CONFIG)')
    .option('--no-install-node', 'never provision Node on a remote that lacks it (then rsync is used)')
    .option('--node-url <url>', 'where a remote downloads Node from ({version}, {os}, {arch} are filled in; env SKYSYNC_NODE_URL)');

  const ctx: CommandContext = { program, native, targetOptions: () => targetOptions(program), print };
  addPush(program, ctx);
  addExec(program, ctx);
  addLaunch(program, ctx);
  addDisconnect(program);
  addPull(program, ctx);
  addJobCommands(program, ctx);
  addStorage(program);
  addFuseCommands(program, ctx);
  addHelpFooters(program);
  return program;
}

/** A repeatable option's values (no default: help would show `(default: [])`). */
function collect(v: string, acc: string[] | undefined): string[] {
  return [...(acc ?? []), v];
}

/** The options of every command that syncs a task to its nodes (push, exec, launch). */
function clusterOptions(c: Command): Command {
  return c
    .option('--head-only', 'only the head node, not the `TARGET-workerN` hosts of the SSH config')
    .option('--nodes <list>', 'exactly these nodes, comma-separated (the first is rank 0)')
    .option('-w, --workdir <dir>', "directory to sync (default: the task's workdir, else the current directory)")
    .option('--dest <path>', 'remote destination of the workdir', '~/sky_workdir')
    .option('--env <K=V>', 'set or override an env of the task (repeatable; K alone takes it from here)', collect)
    .option('--env-file <file>', 'envs from a dotenv file (NAME=VALUE lines); --env wins')
    .option('--secret <K=V>', 'set a secret of the task (repeatable; K alone takes it from here); never printed', collect)
    .option('--secret-file <file>', 'secrets from a dotenv file; --secret wins')
    .addOption(new Option('--delete', 'make an exact mirror: also remove remote files that are not in the source (ignored paths excepted)'))
    .addOption(new Option('--no-delete', "never remove anything on the remote (SkyPilot's behaviour)"))
    .option('-n, --dry-run', 'list what would change, change nothing (and run nothing)')
    .option('--json', "print one JSON object with the statistics at the end: stdout's last line, on a line of its own (after any job output)")
    .option('--json-file <file>', "write that JSON object to FILE (stdout then holds only the job's output and the summary is kept)")
    .option('-q, --quiet', 'no summary')
    .option('-v, --verbose', 'list every file that could not be placed, also when one line says why for all (a full disk)')
    .option('--no-relay', 'send every node its data from here; by default the head passes the workers theirs over the cluster network (env SKYSYNC_RELAY=0)')
    .addOption(
      new Option('--transport <how>', "agent: the skysync agent only; rsync: rsync over ssh with SkyPilot's flags; auto: the agent, or rsync where it cannot run")
        .choices(['auto', 'agent', 'rsync'])
        .default('auto'),
    );
}

function setExit(code: number): void {
  process.exitCode = code;
}

/** `skysync push`. */
function addPush(program: Command, ctx: CommandContext): void {
  clusterOptions(
    program
      .command('push')
      .description("sync a working directory (and a task's local file_mounts) into ~/sky_workdir on TARGET; only what changed moves")
      .argument(
        '[target]',
        'an SSH alias (with its -workerN hosts: the whole cluster), user@host[:port], ssh://user@host[:port], or local:DIR (DIR plays the remote home); default local:~/.skysync/local',
      )
      .argument('[task]', 'a SkyPilot task YAML: its workdir and local file_mounts are synced'),
  )
    .addHelpText(
      'after',
      wrapped(`
By default a push removes on the remote what skysync placed there and you have since deleted or started
ignoring; files that jobs wrote are never removed.

Examples:
  skysync push dev                              push the current directory to dev and every dev-workerN
  skysync push dev task.yaml                    the task's workdir and local file_mounts
  skysync push dev --head-only                  the head node only
  skysync -F ./ssh_config push ubuntu@10.0.0.5:2222 -w ~/proj
  skysync push local:/tmp/node1                 push to a local directory playing the remote's home
  skysync push local:/tmp/node1 -w ~/proj --json
  skysync push local:/tmp/node1 --dry-run       list what would change`),
    )
    .action(async (targetSpec: string | undefined, taskFile: string | undefined, flags: SyncFlags) => {
      setExit(await pushCommand(ctx, targetSpec, taskFile, flags));
    });
}

/** `skysync exec`. */
function addExec(program: Command, ctx: CommandContext): void {
  clusterOptions(
    program
      .command('exec')
      .description("sync the workdir, then run the task's run (or CMD) in ~/sky_workdir on every node, output streamed live")
      .argument('<target>', 'an SSH alias (with its -workerN hosts), user@host[:port], or local:DIR')
      .argument('[task]', 'a SkyPilot task YAML')
      .argument('[command...]', "a command to run instead of the task's run (after the target, or after the task and --)")
      .option('--file-mounts', "also sync the task's local file_mounts (SkyPilot's exec skips them)")
      .option('-d, --detach', 'start the job and return: it runs on under a supervisor (skysync logs/jobs/cancel)'),
  )
    .addHelpText(
      'after',
      wrapped(`
The exit code is the command's (the first non-zero one across nodes). Ctrl-C interrupts the remote command;
twice kills it. Jobs see SKYPILOT_NODE_RANK, SKYPILOT_NUM_NODES, SKYPILOT_NODE_IPS, SKYPILOT_NUM_GPUS_PER_NODE,
SKYPILOT_TASK_ID and SKYPILOT_CLUSTER_INFO, plus the task's envs and secrets. Piped input reaches the head's job.

Examples:
  skysync exec dev task.yaml                    sync the workdir, run the task's run on every node
  skysync exec dev task.yaml --env LR=1e-4      override an env
  skysync exec dev -- python train.py --epochs 1
  skysync exec dev python train.py              the same: a first word that is not a YAML file starts the command
  skysync exec dev task.yaml --secret HF_TOKEN  a secret from the local environment (never printed)
  skysync exec dev task.yaml --file-mounts      also sync the file_mounts first`),
    )
    .action(async (targetSpec: string, taskFile: string | undefined, command: string[], flags: SyncFlags) => {
      // `skysync exec dev -- CMD`: commander hands the first word of CMD over as the task.
      if (taskFile && !/\.ya?ml$/i.test(taskFile) && argvSeen.includes('--')) {
        command = [taskFile, ...command];
        taskFile = undefined;
      }
      setExit(await execCommand(ctx, targetSpec, taskFile, command, flags, false));
    });
}

/** `skysync launch`. */
function addLaunch(program: Command, ctx: CommandContext): void {
  clusterOptions(
    program
      .command('launch')
      .description("SkyPilot's order on an existing machine or cluster: workdir, file_mounts, setup, run")
      .argument('<target>', 'an SSH alias (with its -workerN hosts), user@host[:port], or local:DIR')
      .argument('<task>', 'a SkyPilot task YAML')
      .option('--no-setup', 'skip setup (file_mounts are still synced)')
      .option('-d, --detach', 'start setup and run and return: they run on under a supervisor (skysync logs/jobs/cancel)'),
  )
    .addHelpText(
      'after',
      wrapped(`
skysync does not provision machines: TARGET must already be reachable (for example a cluster SkyPilot created,
whose hosts it wrote into ~/.ssh/config). The exit code is setup's when it fails, else run's.

Examples:
  skysync launch dev task.yaml
  skysync launch dev task.yaml --no-setup --env MODEL=7b`),
    )
    .action(async (targetSpec: string, taskFile: string, flags: SyncFlags) => {
      setExit(await execCommand(ctx, targetSpec, taskFile, [], flags, true));
    });
}

/** `skysync disconnect`. */
function addDisconnect(program: Command): void {
  program
    .command('disconnect')
    .description('end the warm connection(s) kept to TARGET (and its -workerN nodes) after earlier commands')
    .argument('<target>', 'an SSH alias (with its -workerN hosts), user@host[:port]')
    .option('--head-only', 'only the head node')
    .option('--nodes <list>', 'exactly these nodes, comma-separated')
    .addHelpText(
      'after',
      wrapped(`
After a command, skysync keeps the SSH connection to each node open in a small background process for
SKYSYNC_CONTROL_PERSIST seconds (default 300; 0 turns this off), so the next push or exec skips connecting.
disconnect ends every one kept for TARGET, also those made before its SSH config changed.

Examples:
  skysync disconnect dev`),
    )
    .action(async (targetSpec: string, flags: { headOnly?: boolean; nodes?: string }) => {
      let nodes: Awaited<ReturnType<typeof resolveNodes>>;
      try {
        nodes = await resolveNodes(targetSpec, nodeSelection(flags), targetOptions(program));
      } catch (e) {
        // A Host since taken out of the SSH config may still have a warm connection: its socket is found by name.
        if ((e as Error).name !== 'TargetError' || !(await controlShutdownAll(targetSpec))) throw e;
        print(`${targetSpec}: disconnected`);
        return;
      }
      for (const t of nodes) {
        const had = t instanceof SshTarget || t instanceof LocalTarget ? await t.disconnect() : false;
        print(had ? `${t.spec}: disconnected` : `${t.spec}: no warm connection`);
      }
    });
}

let argvSeen: string[] = [];

export async function run(argv: string[]): Promise<number> {
  argv = commandWithoutDashes(argv, (p) => fs.statSync(p, { throwIfNoEntry: false })?.isFile() ?? false);
  argvSeen = argv;
  const program = buildProgram();
  try {
    // A bad setting is said before anything connects.
    try {
      compressLevel();
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0) return EXIT.ok;
      return EXIT.usage;
    }
    const err = e as Error;
    print(`skysync: ${err.message}`);
    return err instanceof UsageError || err.name === 'TargetError' || err.name === 'TaskError' ? EXIT.usage : EXIT.failure;
  }
}
