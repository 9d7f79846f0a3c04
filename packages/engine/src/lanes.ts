// Opening lanes: extra channels to the agent's lane socket, for chunk data (docs/PROTOCOL.md, "Lanes").

import { Connection, Frame, type LaneHello, type LaneOffer } from '@skysync/protocol';
import type { Target } from '@skysync/transport';
import type { OpenLane } from '@skysync/transfer';

/** How long a lane may take to be admitted before the push goes on without lanes. */
const ADMIT_MS = 10_000;

/**
 * Channels for chunk data in all, the main one included (SKYSYNC_LANES; 1 turns lanes off). Eight channels of
 * OpenSSH's 2 MiB window carry some 80 MB/s at 200 ms of round trip; past that the CPU is the limit.
 */
export function laneCount(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.SKYSYNC_LANES;
  if (v === undefined || v === '') return 8;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 16) throw new Error(`SKYSYNC_LANES=${v}: give a whole number from 1 to 16`);
  return n;
}

/** Opens `count` lanes to the agent's socket and waits until each is admitted; all or none. */
export async function openLanes(target: Target, offer: LaneOffer, count: number): Promise<OpenLane[]> {
  if (!target.openSocket) throw new Error(`${target.spec} cannot carry extra channels`);
  const opened: OpenLane[] = [];
  const one = async (id: number): Promise<OpenLane> => {
    const stream = await target.openSocket!(offer.socket);
    const conn = new Connection(stream.input, stream.output, 16);
    const lane: OpenLane = {
      id,
      conn,
      close: () => {
        conn.end();
        stream.close();
      },
    };
    opened.push(lane);
    await conn.sendJson(Frame.LaneHello, { token: offer.token, lane: id } satisfies LaneHello);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`lane ${id} was not admitted within ${ADMIT_MS / 1000} s`)), ADMIT_MS);
      timer.unref();
    });
    try {
      await Promise.race([conn.expect(Frame.LaneHello), late]);
    } finally {
      clearTimeout(timer);
    }
    return lane;
  };
  const results = await Promise.allSettled(Array.from({ length: count }, (_, i) => one(i + 1)));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    for (const l of opened) l.close();
    throw failed.reason as Error;
  }
  return opened.sort((a, b) => a.id - b.id);
}
