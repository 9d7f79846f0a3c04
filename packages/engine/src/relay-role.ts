// The head relay on the client's side: which node serves the others' literal chunks, and when a worker takes them.

import type { PushState, RelayOffer } from '@skysync/protocol';
import type { Target } from '@skysync/transport';

/** Below this many literal bytes a worker takes them from the client as usual: the relay's extra round trip over
 * the client's link would cost more than the bytes. */
export const RELAY_MIN_BYTES = 2 * 1024 * 1024;

/** How one node of a pushMany takes part in the relay. */
export interface RelayRole {
  /** The head's chunk server (null: none, every node is fed by the client). */
  offer: RelayOffer | null;
  head: boolean;
  /** A worker says, once planned, whether it takes its chunks from the relay. */
  decide(used: boolean): void;
  /** The head: whether any worker does (it then needs a plan even with nothing to change, see pushToNode). */
  anyUse: Promise<boolean>;
}

/** Whether a push to these nodes asks the head to serve the others (`SKYSYNC_RELAY=0` turns it off). */
export function relayWanted(nodes: number, dryRun: boolean, relay: boolean | undefined): boolean {
  return nodes > 1 && !dryRun && (relay ?? !/^(0|off|false|no)$/i.test(process.env.SKYSYNC_RELAY ?? ''));
}

/** The head's chunk server, from its state; `SKYSYNC_RELAY_ADDRESSES` (comma-separated) replaces the addresses it
 * found for itself, for networks where the workers know it by another name. */
export function relayOffer(state: PromiseSettledResult<PushState> | undefined, head: Target, warn: (m: string) => void): RelayOffer | null {
  const r = state?.status === 'fulfilled' ? state.value.relay : undefined;
  if (!r) return null;
  if (!('token' in r)) {
    warn(`relay: ${head.spec} cannot serve the other nodes (${r.error}); each gets its data from the client`);
    return null;
  }
  const override = (process.env.SKYSYNC_RELAY_ADDRESSES ?? '')
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean);
  return override.length ? { ...r, addresses: override } : r;
}
