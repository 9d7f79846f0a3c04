// push, exec and launch: what SkyPilot users type, on one node or a whole cluster.

import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import type { NativeAddon } from '@skysync/chunking';
import {
  type BucketStats,
  checkSource,
  nodeAddress,
  resolveNodes,
  runOnNodes,
  syncNodes,
  taskSources,
  type NodeReport,
  type NodeSelection,
  type PushEvent,
  type PushStats,
  taskId,
  taskNodes,
  type RemoteJob,
  type RunRequest,
  type TargetOptions,
} from '@skysync/engine';
import type { DeleteMode } from '@skysync/protocol';
import type { Task } from '@skysync/task';
import type { Target } from '@skysync/transport';
import { barrier } from './fuse-commands.js';
import { EXIT, UsageError } from './exit-codes.js';
import { bucketLine, compactLine, plural, summaryLines } from './output.js';
import { sayOnce } from './notes.js';
import { showBoard, stderrBoard } from './progress.js';
import { startDetachedCommand } from './jobs-commands.js';
import { emitJson, StdoutTracker } from './json-output.js';
import { exitOnInterrupt, interruptedMessage } from './interrupt.js';
import { explainRemoteError, refusalAdvice, refusalReason, roomAdvice, roomReason } from './remote-errors.js';

export interface SyncFlags {
  transport?: 'auto' | 'agent' | 'rsync';
  workdir?: string;
  dest: string;
  delete?: boolean;
  dryRun?: boolean;
  json?: boolean;
  /** --json-file: the --json object goes to this file. */
  jsonFile?: string;
  quiet?: boolean;
  /** --verbose: every file not placed on a line of its own, also when one line says why for all of them. */
  verbose?: boolean;
  headOnly?: boolean;
  nodes?: string;
  env?: string[];
  /** `--secret K[=V]`: values never printed. */
  secret?: string[];
  envFile?: string;
  secretFile?: string;
  fileMounts?: boolean;
  setup?: boolean;
  /** commander's `--no-relay`: false when given. */
  relay?: boolean;
  /** `exec -d` / `launch -d`: run under a supervisor on each node and return. */
  detach?: boolean;
}

export interface CommandContext {
  program: Command;
  native: () => NativeAddon;
  targetOptions: () => TargetOptions;
  print: (line: string) => void;
}

/** `--head-only` and `--nodes a,b,c` as the engine takes them. */
export function nodeSelection(flags: { headOnly?: boolean; nodes?: string }): NodeSelection {
  if (!flags.nodes) return { headOnly: flags.headOnly };
  const names = flags.nodes
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (!names.length) throw new UsageError('--nodes needs a comma-separated list, e.g. --nodes dev,dev-worker1');
  return { headOnly: flags.headOnly, nodes: names };
}

export function deleteMode(flags: SyncFlags): DeleteMode {
  if (flags.delete === true) return 'mirror';
  if (flags.delete === false) return 'none';
  return 'placed';
}

/** --env-file then --env (which wins), and the same for secrets, as `sky launch` merges them. */
async function overrides(flags: SyncFlags): Promise<{ env: Record<string, string>; secrets: Record<string, string> }> {
  const { parseDotenv, parseEnvAssignments, TaskError } = await import('@skysync/task');
  const fromFile = async (file: string | undefined, flag: '--env-file' | '--secret-file'): Promise<Record<string, string>> => {
    if (!file) return {};
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (e) {
      throw new TaskError(`${flag} ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    return parseDotenv(text, file, flag);
  };
  return {
    env: { ...(await fromFile(flags.envFile, '--env-file')), ...parseEnvAssignments(flags.env ?? []) },
    secrets: { ...(await fromFile(flags.secretFile, '--secret-file')), ...parseEnvAssignments(flags.secret ?? [], '--secret') },
  };
}

async function readTask(file: string | undefined, flags: SyncFlags, print: (l: string) => void): Promise<Task | null> {
  if (!file) return null;
  const { loadTask } = await import('@skysync/task');
  const task = await loadTask(path.resolve(file), await overrides(flags));
  if (task.ignoredKeys.length) {
    const many = task.ignoredKeys.length > 1;
    const message = `note: ${path.basename(task.file)}: ${task.ignoredKeys.join(', ')} ${many ? 'are' : 'is'} for SkyPilot's provisioning; skysync ignores ${many ? 'them' : 'it'}`;
    sayOnce(task.file, 'ignored-keys', message, print, flags.quiet);
  }
  return task;
}

/** Byte progress per node (and per mount) on stderr; the scan's counts as a line of their own. */
function progressReporter(nodes: Target[], flags: SyncFlags, print: (l: string) => void) {
  const board = stderrBoard(flags.quiet || flags.json);
  showBoard(board);
  const labelOf = (node: number, what: string): string => (nodes.length > 1 ? `${nodes[node]!.spec} ${what === 'workdir' ? '' : what}`.trim() : what);
  const onEvent = (e: PushEvent, node: number | undefined, what: string): void => {
    if (e.type === 'warning') {
      print(`warning: ${e.message}`);
    } else if (e.type === 'notice' && !flags.quiet) {
      print(`${nodes.length > 1 && node !== undefined ? `${nodes[node]!.spec}: ` : ''}${e.message}`);
    } else if (e.type === 'scanned' && !flags.json && !flags.quiet) {
      print(`${what}: scanned ${plural(e.files, 'file')}; ${plural(e.changes, 'entry', 'entries')} changed`);
    } else if (e.type === 'progress' && node !== undefined) {
      board.bytes(`${node} ${what}`, labelOf(node, what), e.bytesLiteral, e.bytesPlanned);
    } else if (e.type === 'bucket' && node !== undefined && e.objectsTotal > 0) {
      // While the bucket is still being listed the totals grow: "+" says so.
      const noun = `objects${e.settled ? '' : '+'}`;
      board.bytes(`${node} ${what}`, labelOf(node, what), e.bytesDone, e.bytesTotal, { done: e.objectsDone, total: e.objectsTotal, noun });
    }
  };
  return {
    onEvent,
    clear: () => {
      board.finish();
      showBoard(null);
    },
  };
}

function nodeSummary(r: NodeReport): PushStats[] {
  return [...(r.workdir ? [r.workdir] : []), ...r.mounts.map((m) => m.stats)];
}

/** The --json object: the totals every sync reports, then each node's detail. */
function jsonReport(reports: NodeReport[], t0: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const all = reports.flatMap(nodeSummary);
  const sum = (k: 'filesChanged' | 'filesDeleted' | 'bytesLiteral' | 'bytesWire' | 'chunksReused' | 'bytesRelay'): number => all.reduce((a, s) => a + (s[k] ?? 0), 0);
  return {
    filesScanned: reports[0] ? nodeSummary(reports[0]).reduce((a, s) => a + s.filesScanned, 0) : 0,
    filesChanged: sum('filesChanged'),
    filesDeleted: sum('filesDeleted'),
    bytesLiteral: sum('bytesLiteral'),
    bytesWire: sum('bytesWire'),
    bytesRelay: sum('bytesRelay'),
    chunksReused: sum('chunksReused'),
    durationMs: Date.now() - t0,
    transport: [...new Set(all.map((s) => s.transport))].join('+') || 'none',
    // The workdir's scan is shared by every node.
    ...(reports[0]?.workdir ? { scan: reports[0].workdir.scan, scanDirs: reports[0].workdir.scanDirs } : {}),
    nodes: reports,
    ...extra,
  };
}

function reportSync(reports: NodeReport[], flags: SyncFlags, print: (l: string) => void, compact: boolean): void {
  const many = reports.length > 1;
  for (const r of reports) {
    const who = many ? `${r.node}: ` : '';
    const parts: Array<{ label: string; s: PushStats; at: string; bucket?: BucketStats }> = [
      ...(r.workdir ? [{ label: 'workdir', s: r.workdir, at: flags.dest }] : []),
      ...r.mounts.filter((m) => !m.fuse).map((m) => ({ label: `${m.key} -> ${m.placedAt}`, s: m.stats, at: m.placedAt, ...(m.bucket ? { bucket: m.bucket } : {}) })),
    ];
    if (!flags.json && !flags.quiet) {
      for (const m of r.mounts) if (m.fuse) print(`${who}${m.key}: ${m.fuse.source} ${m.fuse.how === 'kept' ? 'still mounted' : m.fuse.how} at ${m.placedAt} (${m.fuse.mode})`);
    }
    for (const { label, s, at } of parts) {
      if (s.dryRun && !flags.json) {
        for (const c of s.changes ?? []) process.stdout.write(`${who}${parts.length > 1 ? `${label}: ` : ''}${c.status.padEnd(11)} ${c.kind === 'dir' ? c.path + '/' : c.path}\n`);
      }
      reportFailed(r.node, who, s, at, !!flags.verbose, print);
      for (const k of s.kept) print(`${who}kept: ${k} (changed on the remote or holds files skysync did not place)`);
      if (s.drift.length) print(`${who}note: ${overwrittenNote(s.drift)}`);
    }
    if (r.error) print(`${who}error: ${explainRemoteError(r.node, r.error)}`);
    if (flags.json || flags.quiet) continue;
    if (!many && parts.length === 1 && !compact && !parts[0]!.bucket) {
      for (const l of summaryLines(parts[0]!.s)) print(l);
    } else {
      for (const { label, s, bucket } of parts) print(`${who}${bucket ? bucketLine(label, s, bucket) : compactLine(label, s)}`);
    }
  }
}

/**
 * Files the remote would not take, each listed; those refused for want of permission share one line saying
 * what to do, instead of the same errno text on every file. A full disk (or quota) is one error for the push:
 * every file after the first fails alike, so the files are listed only with --verbose (--json has them all).
 */
function reportFailed(node: string, who: string, s: PushStats, at: string, verbose: boolean, print: (l: string) => void): void {
  const refusals = new Map<NonNullable<ReturnType<typeof refusalReason>>, number>();
  const full = new Map<NonNullable<ReturnType<typeof roomReason>>, number>();
  for (const f of s.failed) {
    // Not the node's refusal: the source could not be read here, whatever the errno says.
    if (f.inSource) {
      print(`${who}failed: ${f.path}: ${f.error}; the remote keeps what it has there`);
      continue;
    }
    const room = roomReason(f.error);
    if (room) full.set(room, (full.get(room) ?? 0) + 1);
    const reason = refusalReason(f.error);
    if (reason) refusals.set(reason, (refusals.get(reason) ?? 0) + 1);
    if (!room || verbose) print(`${who}failed: ${f.path}: ${room ?? reason ?? f.error}`);
  }
  for (const [reason, n] of refusals) print(`${who}note: ${node}: ${plural(n, 'file')} could not be written in ${at} (${reason}); ${refusalAdvice(node, at, reason)}`);
  for (const [reason, n] of full) print(`error: ${node}: ${reason} in ${at}: ${plural(n, 'file')} not placed (old versions kept); ${roomAdvice(node, at, reason)}`);
}

/** The files the remote changed that this push overwrote: the first few by name, then how many more. */
export function overwrittenNote(paths: string[], shown = 3): string {
  const named = paths.slice(0, shown).join(', ');
  const more = paths.length > shown ? ` and ${paths.length - shown} more` : '';
  const n = paths.length;
  return `${plural(n, 'file')} changed on the remote ${n === 1 ? 'was' : 'were'} overwritten with your local version: ${named}${more}`;
}

/**
 * `--dest ~/x` left unquoted reaches us as the local home's path (the shell expanded it): meant is the remote's
 * home. Said once, as a note.
 */
export function remoteDest(dest: string, print: (l: string) => void, home = os.homedir()): string {
  if (!home || home === '/' || !(dest === home || dest.startsWith(home + '/'))) return dest;
  const mapped = dest === home ? '~' : `~/${dest.slice(home.length + 1)}`;
  print(`note: --dest ${dest} is your local home; taking it as ${mapped} on the remote (quote it, e.g. --dest '~/x', to say so)`);
  return mapped;
}

function syncExit(reports: NodeReport[]): number {
  if (reports.some((r) => r.error)) return EXIT.failure;
  return reports.some((r) => nodeSummary(r).some((s) => s.failed.length)) ? EXIT.partial : EXIT.ok;
}

interface Prepared {
  task: Task | null;
  nodes: Target[];
  reports: NodeReport[];
  t0: number;
}

/** Everything before the commands run: read the task, find the nodes, sync the workdir and the mounts. */
async function syncPhase(
  ctx: CommandContext,
  targetSpec: string,
  taskFile: string | undefined,
  flags: SyncFlags,
  withMounts: boolean,
  defaultWorkdir: boolean,
  compactSummary: boolean,
  onNodes?: (nodes: Target[]) => void,
  runsJobs = false,
): Promise<Prepared> {
  const t0 = Date.now();
  flags.dest = remoteDest(flags.dest, ctx.print);
  const task = await readTask(taskFile, flags, ctx.print);
  const workdir = flags.workdir ? path.resolve(flags.workdir) : task ? task.workdir : defaultWorkdir ? path.resolve('.') : null;
  if (workdir) await checkSource(workdir);
  const sources = await taskSources({ workdir, dest: flags.dest, file: task?.file ?? '', fileMounts: task && withMounts ? task.fileMounts : [] });
  let nodes = await resolveNodes(targetSpec, nodeSelection(flags), ctx.targetOptions());
  // A task's num_nodes picks the nodes its jobs run on, unless the nodes were named on the command line.
  if (task && runsJobs && !flags.headOnly && !flags.nodes) nodes = taskNodes(nodes, task.numNodes, path.basename(task.file));
  // One connection per node for the whole command, until closeAll.
  for (const t of nodes) t.retain();
  onNodes?.(nodes);
  if (!sources.length) return { task, nodes, reports: nodes.map((t) => ({ node: t.spec, workdir: null, mounts: [], error: null, viaRsync: null })), t0 };
  const progress = progressReporter(nodes, flags, ctx.print);
  const onWhat = nodes.length > 1 ? `${nodes.length} nodes (${nodes.map((t) => t.spec).join(', ')})` : nodes[0]!.spec;
  const synced = sources.length > 1 ? `${sources.length} sources` : (workdir ?? 'the file mount');
  const again = runsJobs ? 'the same command' : 'the push';
  const stopWatching = exitOnInterrupt(interruptedMessage(`the sync of ${synced} to ${onWhat}`, again), () => progress.clear(), ctx.print);
  const reports = await syncNodes({
    nodes,
    sources,
    deleteMode: deleteMode(flags),
    dryRun: !!flags.dryRun,
    native: ctx.native(),
    transport: flags.transport ?? 'auto',
    relay: flags.relay === false ? false : undefined,
    onEvent: progress.onEvent,
    log: ctx.print,
  }).finally(() => {
    stopWatching();
    progress.clear();
  });
  reportSync(reports, flags, ctx.print, compactSummary);
  return { task, nodes, reports, t0 };
}

async function closeAll(nodes: Target[]): Promise<void> {
  await Promise.all(nodes.map((t) => t.close().catch(() => {})));
}

export async function pushCommand(ctx: CommandContext, targetSpec: string | undefined, taskFile: string | undefined, flags: SyncFlags): Promise<number> {
  targetSpec ??= `local:${path.join(os.homedir(), '.skysync', 'local')}`;
  const p = await syncPhase(ctx, targetSpec, taskFile, flags, true, true, false);
  try {
    const code = syncExit(p.reports);
    if (flags.json || flags.jsonFile) {
      // One node, no task: the sync's own statistics, as `push` has always printed them.
      const single = p.reports.length === 1 && !taskFile && p.reports[0]!.workdir && !p.reports[0]!.error;
      emitJson(single ? p.reports[0]!.workdir : jsonReport(p.reports, p.t0, { exitCode: code }), flags);
    }
    return code;
  } finally {
    await closeAll(p.nodes);
  }
}

/** Runs setup (launch) and run on every node; Ctrl-C is passed on to the jobs, twice kills them. */
type JobRun = Pick<RunRequest, 'script' | 'env' | 'addresses' | 'job' | 'cwd' | 'stdin'>;

async function runPhase(ctx: CommandContext, p: Prepared, run: JobRun, what: string, stdout: StdoutTracker): Promise<number[]> {
  let jobs: RemoteJob[] = [];
  let interrupts = 0;
  const onSigint = (): void => {
    interrupts++;
    ctx.print(interrupts === 1 ? `\nskysync: interrupting ${what} on ${p.nodes.length > 1 ? 'every node' : p.nodes[0]!.spec} (Ctrl-C again to kill it)` : '\nskysync: killing it');
    for (const j of jobs) j.signal(interrupts === 1 ? 'INT' : 'KILL');
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  try {
    return await runOnNodes({ ...run, nodes: p.nodes, stdout: stdout.stream, stderr: process.stderr }, (j) => (jobs = j));
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
  }
}

/** Input piped or redirected to us, for the head's job; a terminal's stays here (Ctrl-C is ours), /dev/null is nothing. */
function pipedStdin(): NodeJS.ReadStream | undefined {
  try {
    if (process.stdin.isTTY || fsSync.fstatSync(0).isCharacterDevice()) return undefined;
  } catch {
    return undefined;
  }
  return process.stdin;
}

function firstFailure(codes: number[]): number {
  return codes.find((c) => c !== 0) ?? 0;
}

export async function execCommand(ctx: CommandContext, targetSpec: string, taskFile: string | undefined, command: string[], flags: SyncFlags, launch: boolean): Promise<number> {
  if (command.length && launch) throw new UsageError("launch runs the task's setup and run; pass a command to `skysync exec` instead");
  if (!taskFile && !command.length) throw new UsageError(`nothing to run: give a task YAML or a command after --, e.g. skysync exec ${targetSpec} -- python train.py`);
  const withMounts = launch || !!flags.fileMounts;
  // As `sky exec`: without a task, only an explicit --workdir is synced.
  // Each node's address (for SKYPILOT_NODE_IPS) is asked for while the workdir syncs, not after.
  let early: Promise<string[]> | null = null;
  const p = await syncPhase(
    ctx,
    targetSpec,
    taskFile,
    flags,
    withMounts,
    false,
    true,
    (nodes) => {
      if (flags.dryRun) return;
      early = Promise.all(nodes.map(nodeAddress));
      early.catch(() => {});
    },
    true,
  );
  try {
    if (!launch && !flags.fileMounts && p.task?.fileMounts.length) {
      const message = "note: file_mounts are not synced by exec (SkyPilot's exec skips them too); add --file-mounts to sync them";
      sayOnce(p.task.file, 'exec-skips-mounts', message, ctx.print, flags.quiet);
    }
    const syncCode = syncExit(p.reports);
    const result: Record<string, unknown> = {};
    const stdout = new StdoutTracker();
    let code = syncCode === EXIT.failure ? EXIT.failure : 0;
    if (syncCode !== EXIT.failure && !flags.dryRun) {
      const env = { ...(p.task?.envs ?? {}), ...(p.task?.secrets ?? {}) };
      if (!p.task) {
        const given = await overrides(flags);
        Object.assign(env, given.env, given.secrets);
      }
      const addresses = await (early ?? Promise.all(p.nodes.map(nodeAddress)));
      const job = { cluster: targetSpec, taskId: taskId(targetSpec), gpusPerNode: p.task?.gpusPerNode ?? 0 };
      // The job runs where its workdir went.
      const base = { env, addresses, job, cwd: flags.dest };
      // The task's FUSE mounts: what setup and run wrote there is in the bucket before the command (or job) ends.
      const fusePaths = (p.task?.fileMounts ?? []).flatMap((m) => (m.kind === 'storage' && m.mode !== 'COPY' ? [m.remote] : []));
      if (flags.detach)
        return await startDetachedCommand(ctx, {
          fusePaths,
          nodes: p.nodes,
          setup: launch && flags.setup !== false ? p.task?.setup : undefined,
          run: command.length ? command.join(' ') : p.task?.run,
          env,
          addresses,
          json: flags.json,
          targetSpec,
          job,
          cwd: flags.dest,
        });
      if (launch && p.task?.setup && flags.setup !== false) {
        const setupCodes = await runPhase(ctx, p, { ...base, script: p.task.setup }, 'setup', stdout);
        result.setupExitCodes = setupCodes;
        const failedWith = firstFailure(setupCodes);
        const bad = await barrier(ctx, p.nodes, fusePaths, failedWith, flags.quiet);
        if (bad) {
          ctx.print(
            failedWith
              ? `skysync: setup failed with exit code ${bad}${p.nodes.length > 1 ? ` on ${p.nodes[setupCodes.indexOf(bad)]!.spec}` : ''}; run was not started`
              : "skysync: setup's writes under the task's mounts did not all reach the bucket (above); run was not started",
          );
          code = bad;
        }
      }
      const script = command.length ? command.join(' ') : p.task?.run;
      if (!code && script) {
        const stdin = pipedStdin();
        const codes = await runPhase(ctx, p, { ...base, script, stdin }, 'the job', stdout);
        stdin?.pause();
        result.exitCodes = codes;
        code = await barrier(ctx, p.nodes, fusePaths, firstFailure(codes), flags.quiet);
      } else if (!code && !script && !flags.quiet) {
        ctx.print('note: the task has no run command; synced only');
      }
    }
    if (flags.json || flags.jsonFile) emitJson(jsonReport(p.reports, p.t0, { ...result, exitCode: code || syncCode }), flags, stdout);
    return code || syncCode;
  } finally {
    await closeAll(p.nodes);
  }
}

/** Options that take a value (the next word, unless written `--opt=value`), for finding exec's positionals. */
const VALUE_OPTIONS = new Set([
  '-F',
  '--ssh-config',
  '--node-url',
  '--nodes',
  '-w',
  '--workdir',
  '--dest',
  '--env',
  '--secret',
  '--env-file',
  '--secret-file',
  '--transport',
  '--json-file',
]);

/**
 * `skysync exec TARGET python3 train.py`, as `sky exec` takes it: when the word after the target is not an
 * existing YAML file, it and the rest are the command. A `--` is put before it, so its options stay its own.
 */
export function commandWithoutDashes(argv: string[], isFile: (p: string) => boolean): string[] {
  let i = 0;
  // Global options, then the command's name.
  while (i < argv.length && argv[i]!.startsWith('-')) i += VALUE_OPTIONS.has(argv[i]!) ? 2 : 1;
  if (argv[i] !== 'exec') return argv;
  let positionals = 0;
  for (let j = i + 1; j < argv.length; j++) {
    const a = argv[j]!;
    if (a === '--') return argv;
    if (a.startsWith('-') && a !== '-') {
      if (VALUE_OPTIONS.has(a)) j++;
      continue;
    }
    positionals++;
    if (positionals === 1) continue;
    if (positionals === 2 && /\.ya?ml$/i.test(a) && isFile(a)) continue;
    return [...argv.slice(0, j), '--', ...argv.slice(j)];
  }
  return argv;
}
