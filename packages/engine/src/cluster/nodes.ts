// A command's nodes: `dev` means the head and every `dev-workerN` the SSH config defines.

import dns from 'node:dns/promises';
import { closest } from '@skysync/task';
import { SshTarget, TargetError, configNames, listWorkers, parseTarget, type Target } from '@skysync/transport';
import { capture } from './capture.js';

export interface TargetOptions {
  configFile?: string;
  installNode: boolean;
  nodeUrl?: string;
  log: (m: string) => void;
}

export interface NodeSelection {
  headOnly?: boolean;
  /** `--nodes a,b,c`: exactly these, in this order (the first is the head, rank 0). */
  nodes?: string[];
}

/** Whether a target spec is an SSH config alias (the only kind that can name a cluster). */
function isAlias(spec: string): boolean {
  return !spec.startsWith('local:') && !spec.includes('@') && !spec.includes(':') && !spec.startsWith('ssh://');
}

/**
 * An alias that no Host of the SSH config names and that is no resolvable host name either is a typo far more
 * often than a machine: said as such (with the nearest alias the config has), before any connection is tried.
 */
export async function checkHostKnown(spec: string, configFile?: string): Promise<void> {
  configFile ??= process.env.SKYSYNC_SSH_CONFIG;
  if (!isAlias(spec)) return;
  const { named, aliases } = configNames(spec, configFile);
  if (named) return;
  const resolves = await dns.lookup(spec).then(
    () => true,
    () => false,
  );
  if (resolves) return;
  const near = closest(spec, aliases);
  const where = configFile ?? '~/.ssh/config';
  throw new TargetError(`no host ${spec} in ${where}, and no machine of that name resolves${near ? `; did you mean ${near}?` : ''}`);
}

export async function resolveNodes(spec: string, sel: NodeSelection, topts: TargetOptions): Promise<Target[]> {
  const configFile = topts.configFile ?? process.env.SKYSYNC_SSH_CONFIG;
  for (const n of sel.nodes?.length ? sel.nodes : [spec]) await checkHostKnown(n, configFile);
  if (sel.nodes?.length) return sel.nodes.map((n) => parseTarget(n, { ...topts, configFile }));
  const head = parseTarget(spec, { ...topts, configFile });
  if (sel.headOnly || !isAlias(spec)) return [head];
  const workers = await listWorkers(spec, configFile);
  return [head, ...workers.map((w) => parseTarget(w, { ...topts, configFile }))];
}

/**
 * The address other nodes reach this one at (SkyPilot's SKYPILOT_NODE_IPS): the node's own first address. A node
 * that cannot be reached fails here, before a job starts on any node.
 */
export async function nodeAddress(target: Target): Promise<string> {
  if (target.kind === 'local') return '127.0.0.1';
  let printed = '';
  try {
    printed = (await capture(target, 'hostname -I 2>/dev/null || hostname -i 2>/dev/null')).out;
  } catch (e) {
    throw new Error(`${target.spec}: ${(e as Error).message}`);
  }
  const ip = printed.trim().split(/\s+/)[0];
  if (ip) return ip;
  return target instanceof SshTarget ? (await target.resolve()).hostname : '127.0.0.1';
}

/** The nodes a task with `num_nodes` runs on: the first ones, head first; a task asking for more is refused, as
 * SkyPilot refuses it. */
export function taskNodes(nodes: Target[], numNodes: number, what: string): Target[] {
  if (numNodes > nodes.length) {
    const have = `${nodes.length} node${nodes.length > 1 ? 's' : ''} (${nodes.map((t) => t.spec).join(', ')})`;
    throw new TargetError(`${what}: num_nodes is ${numNodes}, but the cluster has ${have}; lower num_nodes, or add -workerN hosts to the SSH config`);
  }
  return nodes.slice(0, numNodes);
}
