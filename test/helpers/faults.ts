// Shared pieces of the fault tests (kill points, races, full and read-only disks): the CLI run with a deadline,
// processes found through /proc, temp names, and the torn-file check against every version a file ever had.

import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import type { Item } from './tree.js';

export const BIN = path.resolve('packages/cli/dist/bin.js');

export interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Still running at the deadline (then killed): a hang, which these tests exist to catch. */
  timedOut: boolean;
  ms: number;
  /** On a hang: the processes of skysync, its agents and sshd as they were at the deadline. */
  hangReport?: string;
}

export interface CliRun {
  pid: number;
  done: Promise<Outcome>;
  /** Resolves once the scan is reported (data flows from then on), or when the command ends. */
  sending: Promise<void>;
}

/** Runs the CLI as a child; past `deadlineMs` it is killed and reported as timed out. */
export function runCli(args: string[], env: NodeJS.ProcessEnv, deadlineMs: number): CliRun {
  const started = Date.now();
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const sending = new Promise<void>((resolve) => {
    child.stderr.on('data', () => stderr.includes('changed') && resolve());
    child.on('close', () => resolve());
  });
  let timedOut = false;
  let hangReport: string | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    hangReport = processReport();
    child.kill('SIGKILL');
  }, deadlineMs);
  const done = new Promise<Outcome>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut, ms: Date.now() - started, hangReport });
    }),
  );
  return { pid: child.pid!, done, sending };
}

/** What runs of skysync, its agents and sshd, with each process's state and where it waits in the kernel. */
export function processReport(): string {
  const r = spawnSync('ps', ['-eo', 'pid,ppid,user,stat,etimes,wchan:24,args', '--forest'], { encoding: 'utf8' });
  return (r.stdout ?? '')
    .split('\n')
    .filter((l) => /sshd|skysync|agent|bin\.js|PID/.test(l) && !/ps -eo/.test(l))
    .join('\n');
}

/** The `error:` lines of a command's stderr. */
export function errorLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.startsWith('error:'));
}

interface ProcInfo {
  pid: number;
  ppid: number;
  uid: number;
  comm: string;
  argv: string[];
}

/** Every process now running, read from /proc (entries that vanish meanwhile are skipped). */
export function processes(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const uidLine = fs
        .readFileSync(`/proc/${p}/status`, 'utf8')
        .split('\n')
        .find((l) => l.startsWith('Uid:'));
      const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      out.push({ pid: Number(p), ppid, uid: Number(uidLine?.split(/\s+/)[1]), comm, argv });
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/** Agents (`agent.cjs serve`) whose command line satisfies `mine`. */
export function agentPids(mine: (argv: string[]) => boolean): number[] {
  return processes()
    .filter((p) => p.argv.includes('serve') && p.argv.some((a) => a.endsWith('.cjs')) && mine(p.argv))
    .map((p) => p.pid);
}

/** The per-connection sshd processes running as `uid` (what serves an SSH session; not the listener). */
export function sshdSessionPids(uid: number): number[] {
  return processes()
    .filter((p) => p.uid === uid && p.comm.startsWith('sshd'))
    .map((p) => p.pid);
}

export function kill(pids: number[], signal: NodeJS.Signals = 'SIGKILL'): number {
  let n = 0;
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
      n++;
    } catch {
      // Already gone.
    }
  }
  return n;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until `pids()` is empty; returns what is still there at the deadline. */
export async function waitGone(pids: () => number[], deadlineMs: number): Promise<number[]> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const left = pids();
    if (!left.length || Date.now() > end) return left;
    await sleep(50);
  }
}

/** A name of skysync's temp files or staging directories (the destination's `.skysync` itself is not one). */
export const isTempName = (name: string): boolean => name.startsWith('.skysync-');

/** Temp files and staging directories anywhere below `root`, as relative paths. */
export function tempPaths(root: string): string[] {
  const out: string[] = [];
  const visit = (dir: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const d of entries) {
      const abs = path.join(dir, d.name);
      if (isTempName(d.name)) out.push(path.relative(root, abs));
      else if (d.isDirectory()) visit(abs);
    }
  };
  visit(root);
  return out;
}

/** Skips temp names in `walk` (a killed sync may leave them until the next push). */
export const skipTemps = (rel: string): boolean => rel.split('/').some(isTempName);

/**
 * Files whose content is none of the versions `allowed` gives for their path: torn ones (or strays, at a path that
 * never had a file).
 */
export function tornFiles(actual: Map<string, Item>, allowed: (rel: string) => Set<string> | undefined): string[] {
  const torn: string[] = [];
  for (const [p, item] of actual) {
    if (item.type === 'file' && !allowed(p)?.has(item.sha!)) torn.push(`${p} (${item.size} bytes)`);
  }
  return torn;
}
