// A command's nodes: `dev` means the head and every `dev-workerN` the SSH config defines. One scan and one
// chunking pass feed them all; each keeps its own state; the workdir and every local file mount travel over one
// connection and one agent session per node; then setup and run execute on every node at once.

import type { NativeAddon } from '@skysync/chunking';
import { openSession, pushMany, pushWithRsync, runJob, shellQuote, type PushEvent, type PushStats, type RemoteJob, type Session, type SessionOpener } from '@skysync/engine';
import type { DeleteMode, PushBegin } from '@skysync/protocol';
import type { FileMount } from '@skysync/task';
import { NoAgentError, SshTarget, listWorkers, parseTarget, type Target } from '@skysync/transport';
import { UsageError } from './exit-codes.js';

export interface TargetOptions {
  configFile?: string;
  installNode: boolean;
  nodeUrl?: string;
  log: (m: string) => void;
}

export interface NodeSelection {
  headOnly?: boolean;
  /** `--nodes a,b,c`: exactly these, in this order (the first is the head, rank 0). */
  nodes?: string;
}

/** Whether a target spec is an SSH config alias (the only kind that can name a cluster). */
function isAlias(spec: string): boolean {
  return !spec.startsWith('local:') && !spec.includes('@') && !spec.includes(':') && !spec.startsWith('ssh://');
}

export async function resolveNodes(spec: string, sel: NodeSelection, topts: TargetOptions): Promise<Target[]> {
  const configFile = topts.configFile ?? process.env.SKYSYNC_SSH_CONFIG;
  if (sel.nodes) {
    const names = sel.nodes.split(',').map((s) => s.trim()).filter(Boolean);
    if (!names.length) throw new UsageError('--nodes needs a comma-separated list, e.g. --nodes dev,dev-worker1');
    return names.map((n) => parseTarget(n, { ...topts, configFile }));
  }
  const head = parseTarget(spec, { ...topts, configFile });
  if (sel.headOnly || !isAlias(spec)) return [head];
  const workers = await listWorkers(spec, configFile);
  return [head, ...workers.map((w) => parseTarget(w, { ...topts, configFile }))];
}

export type LocalMount = Extract<FileMount, { kind: 'local' }>;

export interface MountReport {
  key: string;
  remote: string;
  /** Where the bytes went: the destination itself, or ~/.sky/file_mounts/... linked into place. */
  placedAt: string;
  stats: PushStats;
}

export interface NodeReport {
  node: string;
  workdir: PushStats | null;
  mounts: MountReport[];
  /** Set when this node could not be synced; the command stops before running anything. */
  error: string | null;
  viaRsync: string | null;
}

export interface SyncRequest {
  nodes: Target[];
  workdir: string | null;
  dest: string;
  mounts: LocalMount[];
  deleteMode: DeleteMode;
  dryRun: boolean;
  native: NativeAddon;
  transport: 'auto' | 'agent' | 'rsync';
  /** false: no head relay (`--no-relay`); undefined: the default (on, unless SKYSYNC_RELAY=0). */
  relay?: boolean;
  onEvent: (e: PushEvent, node: number | undefined, what: string) => void;
  log: (m: string) => void;
}

const PROBE_MOUNTS = [
  // For each destination: can this user write it (or create it), or must it be linked into place?
  'for D in "$@"; do',
  '  p="$D"; while [ ! -e "$p" ] && [ ! -L "$p" ] && [ "$p" != / ]; do p=$(dirname "$p"); done',
  '  if [ -L "$D" ]; then echo link; elif [ -w "$p" ]; then echo direct; else echo link; fi',
  'done',
].join('\n');

async function collect(job: { stdout: NodeJS.ReadableStream; stderr: NodeJS.ReadableStream; exited: Promise<number | null> }): Promise<{ code: number | null; out: string; err: string }> {
  let out = '';
  let err = '';
  job.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
  job.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
  const code = await job.exited;
  return { code, out, err };
}

/** Where each elsewhere-mount goes on one node: written directly, or under ~/.sky/file_mounts and linked. */
async function mountPlacements(target: Target, mounts: LocalMount[]): Promise<Map<string, 'direct' | 'link'>> {
  const result = new Map<string, 'direct' | 'link'>();
  // Loaded only for tasks: the YAML parser costs every other command startup time.
  const { placement } = await import('@skysync/task');
  const elsewhere = mounts.filter((m) => placement(m.remote) === 'elsewhere');
  for (const m of mounts) if (!elsewhere.includes(m)) result.set(m.key, 'direct');
  if (!elsewhere.length) return result;
  const proc = await target.exec(`sh -c ${shellQuote(PROBE_MOUNTS)} skysync-mounts ${elsewhere.map((m) => shellQuote(m.remote)).join(' ')}`);
  proc.stdin.end();
  const r = await collect(proc);
  const answers = r.out.trim().split('\n');
  elsewhere.forEach((m, i) => result.set(m.key, answers[i] === 'direct' ? 'direct' : 'link'));
  return result;
}

function linkedPath(remote: string): string {
  return `~/.sky/file_mounts/${remote.replace(/^\/+/, '')}`;
}

const LINK_MOUNT = [
  's="$HOME/.sky/file_mounts/${1#/}"; d="$1"',
  'if [ -L "$d" ] && [ "$(readlink "$d")" = "$s" ]; then exit 0; fi',
  'if [ -e "$d" ] && [ ! -L "$d" ]; then echo "Failed mounting because path exists: $d" >&2; exit 3; fi',
  'if [ -w "$(dirname "$d")" ] 2>/dev/null; then ln -sfn "$s" "$d" && exit 0; fi',
  'command -v sudo >/dev/null 2>&1 || { echo "cannot write $(dirname "$d") and there is no sudo" >&2; exit 4; }',
  'sudo -n mkdir -p "$(dirname "$d")" && sudo -n ln -sfn "$s" "$d" || { echo "cannot write $(dirname "$d") and sudo needs a password" >&2; exit 4; }',
].join('\n');

function deferred<T>(): { promise: Promise<T>; resolve: (v: T | Promise<T>) => void } {
  let resolve!: (v: T | Promise<T>) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

export async function syncNodes(req: SyncRequest): Promise<NodeReport[]> {
  const reports: NodeReport[] = req.nodes.map((t) => ({ node: t.spec, workdir: null, mounts: [], error: null, viaRsync: null }));
  // One agent session per node for the whole sync; nodes where the agent cannot run fall back to rsync. With a
  // workdir, the push opens them, its first operation in their first bytes, and scans while they are made.
  const viaAgent = req.transport !== 'rsync';
  const openFor = async (i: number, begin?: PushBegin): Promise<Session | null> => {
    const t = req.nodes[i]!;
    try {
      const s = await openSession(t, t.kind === 'local' ? ['none'] : ['zstd', 'deflate', 'none'], begin);
      await s.agentHello;
      return s;
    } catch (e) {
      if (e instanceof NoAgentError && req.transport === 'auto' && t instanceof SshTarget) {
        reports[i]!.viaRsync = e.message;
        return null;
      }
      reports[i]!.error = (e as Error).message;
      return null;
    }
  };
  if (!viaAgent) for (const r of reports) r.viaRsync = '--transport rsync';
  const openers = req.nodes.map(() => deferred<Session | null>());
  const opening = openers.map((d) => d.promise);
  if (!viaAgent) openers.forEach((d) => d.resolve(null));
  else if (!req.workdir) openers.forEach((d, i) => d.resolve(openFor(i)));
  const sessions: Array<Session | null> = req.nodes.map(() => null);
  opening.forEach((p, i) => void p.then((s) => (sessions[i] = s)));
  const placementsP = opening.map(async (p, i) => {
    const s = await p;
    return s && req.mounts.length ? mountPlacements(req.nodes[i]!, req.mounts) : new Map<string, 'direct' | 'link'>();
  });
  placementsP.forEach((p) => p.catch(() => {}));
  const live = (): number[] => req.nodes.map((_, i) => i).filter((i) => sessions[i] && !reports[i]!.error);

  const pushAll = async (
    source: string,
    what: string,
    destFor: (i: number) => string,
    idx: number[],
    sessionOf: (i: number) => Session | SessionOpener = (i) => sessions[i]!,
  ): Promise<Map<number, PushStats>> => {
    const out = new Map<number, PushStats>();
    // Nodes that agree on the destination share one pushMany (one scan, one chunking pass).
    const groups = new Map<string, number[]>();
    for (const i of idx) {
      const d = destFor(i);
      groups.set(d, [...(groups.get(d) ?? []), i]);
    }
    for (const [dest, members] of groups) {
      const results = await pushMany({
        source,
        dest,
        targets: members.map((i) => req.nodes[i]!),
        sessions: members.map(sessionOf),
        deleteMode: req.deleteMode,
        dryRun: req.dryRun,
        native: req.native,
        relay: req.relay,
        onEvent: (e, n) => req.onEvent(e, n === undefined ? undefined : members[n], what),
      });
      results.forEach((r, k) => {
        const i = members[k]!;
        // A node whose session did not open already has its report (an error, or the rsync fallback).
        if (r instanceof Error) {
          if (!reports[i]!.error && !reports[i]!.viaRsync) reports[i]!.error = `${what}: ${r.message}`;
        }
        else out.set(i, r);
      });
    }
    return out;
  };

  let completed = false;
  try {
    if (req.workdir) {
      const opener = (i: number) => (begin: PushBegin): Promise<Session> => {
        const s = openFor(i, begin);
        openers[i]!.resolve(s);
        return s.then((x) => x ?? Promise.reject(new Error('no session')));
      };
      const done = await pushAll(req.workdir, 'workdir', () => req.dest, viaAgent ? req.nodes.map((_, i) => i) : [], opener);
      for (const [i, s] of done) reports[i]!.workdir = s;
      // The rsync fallback, one node at a time as SkyPilot does it.
      for (let i = 0; i < req.nodes.length; i++) {
        const why = reports[i]!.viaRsync;
        if (!why || reports[i]!.error) continue;
        req.log(`${req.nodes[i]!.spec}: using rsync over ssh: ${why}`);
        try {
          reports[i]!.workdir = await pushWithRsync({ source: req.workdir, target: req.nodes[i] as SshTarget, dest: req.dest, deleteMode: req.deleteMode, native: req.native, dryRun: req.dryRun });
        } catch (e) {
          reports[i]!.error = (e as Error).message;
        }
      }
    }
    await Promise.all(opening);
    for (const m of req.mounts) {
      for (let i = 0; i < req.nodes.length; i++) {
        if (reports[i]!.viaRsync && !reports[i]!.error) {
          if (m.sourceType !== 'dir') {
            reports[i]!.error = `${m.key}: a single-file mount needs the skysync agent on ${req.nodes[i]!.spec} (${reports[i]!.viaRsync})`;
            continue;
          }
          try {
            const stats = await pushWithRsync({ source: m.source, target: req.nodes[i] as SshTarget, dest: m.remote, deleteMode: req.deleteMode, native: req.native, dryRun: req.dryRun });
            reports[i]!.mounts.push({ key: m.key, remote: m.remote, placedAt: m.remote, stats });
          } catch (e) {
            reports[i]!.error = `${m.key}: ${(e as Error).message}`;
          }
        }
      }
      const idx = live();
      const where = new Map<number, 'direct' | 'link'>();
      for (const i of idx) {
        try {
          where.set(i, (await placementsP[i]!).get(m.key) ?? 'direct');
        } catch (e) {
          reports[i]!.error = `${m.key}: ${(e as Error).message}`;
        }
      }
      const destFor = (i: number): string => (where.get(i) === 'link' ? linkedPath(m.remote) : m.remote);
      const done = await pushAll(m.source, m.key, destFor, live());
      for (const [i, s] of done) reports[i]!.mounts.push({ key: m.key, remote: m.remote, placedAt: destFor(i), stats: s });
      if (!req.dryRun) {
        await Promise.all(
          [...done.keys()].filter((i) => where.get(i) === 'link').map(async (i) => {
            const proc = await req.nodes[i]!.exec(`sh -c ${shellQuote(LINK_MOUNT)} skysync-link ${shellQuote(m.remote)}`);
            proc.stdin.end();
            const r = await collect(proc);
            if (r.code !== 0) {
              const why = r.err.trim().split('\n').pop() || `exit ${r.code}`;
              reports[i]!.error = `${m.key}: ${why} on ${req.nodes[i]!.spec}; pick a destination under ~/ or /tmp/, or one this user may write`;
            }
          }),
        );
      }
    }
    completed = true;
  } finally {
    // A workdir push that failed before it opened every session leaves the rest unopened.
    openers.forEach((d) => d.resolve(null));
    await Promise.all(opening);
    // A node whose operations all ran to their end keeps its agent when a warm connection can hold it.
    await Promise.all(sessions.map((s, i) => (completed && !reports[i]!.error ? s?.release() : s?.close())?.catch(() => {})));
  }
  return reports;
}

/** The address other nodes reach this one at (SkyPilot's SKYPILOT_NODE_IPS): the node's own first address. */
export async function nodeAddress(target: Target): Promise<string> {
  if (target.kind === 'local') return '127.0.0.1';
  try {
    const proc = await target.exec('hostname -I 2>/dev/null || hostname -i 2>/dev/null');
    proc.stdin.end();
    const r = await collect(proc);
    const ip = r.out.trim().split(/\s+/)[0];
    if (ip) return ip;
  } catch {
    // Fall back to the address we connect to.
  }
  return target instanceof SshTarget ? (await target.resolve()).hostname : '127.0.0.1';
}

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
  const jobs = await Promise.all(
    req.nodes.map((t, rank) =>
      runJob(t, req.script, {
        ...req.env,
        SKYPILOT_NODE_RANK: String(rank),
        SKYPILOT_NUM_NODES: String(n),
        SKYPILOT_NODE_IPS: req.addresses.join('\n'),
      }),
    ),
  );
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
