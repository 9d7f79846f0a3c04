// Storage MOUNT and MOUNT_CACHED across the nodes of a command: mount (rclone provided first), the flush barrier,
// unmount, status. Each node runs the agent's `fuse` subcommand; a node's failures become one line naming the
// mount and the node. A mount whose rclone died is restarted with fresh credentials by flush and unmount, so the
// writes it had queued go up.

import type { FuseMountSpec } from '@skysync/protocol';
import type { Target } from '@skysync/transport';
import { fuseSpec } from './backend.js';
import { type FuseEvent, type FuseVerb, runFuse } from './node-commands.js';
import { provideRclone } from './provide-rclone.js';

export { fuseSpec, type FuseTarget } from './backend.js';
export type { FuseEvent } from './node-commands.js';

export interface FuseNodeResult {
  node: string;
  events: FuseEvent[];
  /** One line per failure, naming the mount and the node; empty when every mount did what was asked. */
  errors: string[];
}

function nodeResult(target: Target, r: { code: number | null; events: FuseEvent[]; stderr: string }): FuseNodeResult {
  const errors = r.events.flatMap((e) => (e.event === 'failed' ? [`${e.key === e.path ? e.path : e.key}: ${e.error} (on ${target.spec})`] : []));
  if (r.code !== 0 && !errors.length) errors.push(`${target.spec}: ${r.stderr || (r.code === null ? 'the connection dropped' : `exit ${r.code}`)}`);
  return { node: target.spec, events: r.events, errors };
}

async function onNodes(nodes: Target[], each: (t: Target, i: number) => Promise<FuseNodeResult>): Promise<FuseNodeResult[]> {
  return Promise.all(
    nodes.map(async (t, i) => {
      try {
        return await each(t, i);
      } catch (e) {
        return { node: t.spec, events: [], errors: [`${t.spec}: ${(e as Error).message}`] };
      }
    }),
  );
}

export function mountOnNodes(nodes: Target[], specs: FuseMountSpec[], onEvent: (e: FuseEvent, node: number) => void = () => {}): Promise<FuseNodeResult[]> {
  return onNodes(nodes, async (t, i) => {
    const missing = await provideRclone(t);
    if (missing) return { node: t.spec, events: [], errors: specs.map((s) => `${s.key}: ${missing}`) };
    return nodeResult(t, await runFuse(t, 'mount', { mounts: specs, only: [] }, (e) => onEvent(e, i)));
  });
}

/** The mounts a node has (the agent's records), with whether their rclone still runs. */
export async function fuseStatus(nodes: Target[]): Promise<Array<Extract<FuseEvent, { event: 'status' }>[]>> {
  const runs = await Promise.all(nodes.map((t) => runFuse(t, 'status', { mounts: [], only: [] }).catch(() => null)));
  return runs.map((r) => (r?.events ?? []).filter((e): e is Extract<FuseEvent, { event: 'status' }> => e.event === 'status'));
}

/**
 * Flush (the barrier) or unmount `only` (paths as the task wrote them; empty: every mount of each node). Mounts
 * whose rclone is gone get fresh credentials, for the agent to restart them on their cache.
 */
export function settleOnNodes(
  nodes: Target[],
  verb: Extract<FuseVerb, 'flush' | 'unmount'>,
  only: string[],
  options: { onEvent?: (e: FuseEvent, node: number) => void /** Paths of `only` a node has no mount at are passed over (the barrier of a task). */; mountedOnly?: boolean } = {},
): Promise<FuseNodeResult[]> {
  const onEvent = options.onEvent ?? (() => {});
  return onNodes(nodes, async (t, i) => {
    // One exec when every mount is alive; a dead one is named, and restarted with fresh credentials by a second.
    const first = await runFuse(t, verb, { mounts: [], only, skipUnknown: !!options.mountedOnly }, (e) => onEvent(e, i));
    const dead = first.events.filter((e): e is Extract<FuseEvent, { event: 'dead' }> => e.event === 'dead');
    if (!dead.length) return nodeResult(t, first);
    const specs: FuseMountSpec[] = [];
    const { parseStoreUri } = await import('@skysync/store');
    for (const d of dead) specs.push(await fuseSpec({ key: d.key, path: d.written, uri: parseStoreUri(d.source), mode: d.mode }));
    const missing = await provideRclone(t);
    if (missing) return { node: t.spec, events: first.events, errors: [missing] };
    const second = await runFuse(t, verb, { mounts: specs, only: dead.map((d) => d.written) }, (e) => onEvent(e, i));
    const merged = nodeResult(t, { ...second, events: [...first.events.filter((e) => e.event !== 'dead'), ...second.events] });
    const firstErrors = nodeResult(t, { ...first, code: 0 }).errors;
    return { ...merged, errors: [...firstErrors, ...merged.errors] };
  });
}
