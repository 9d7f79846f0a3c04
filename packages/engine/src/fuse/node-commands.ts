// Running the agent's `fuse` subcommand on a node: the request on its stdin (credentials never in its arguments),
// one JSON event per line back.

import { FuseEvent, type FuseRequest } from '@skysync/protocol';

export type { FuseEvent } from '@skysync/protocol';
import type { Target } from '@skysync/transport';

export type FuseVerb = 'mount' | 'flush' | 'unmount' | 'status';

export interface FuseRun {
  code: number | null;
  events: FuseEvent[];
  /** The last line on stderr, for when the command could not even run. */
  stderr: string;
}

export async function runFuse(target: Target, verb: FuseVerb, request: FuseRequest, onEvent: (e: FuseEvent) => void = () => {}): Promise<FuseRun> {
  const proc = await target.exec(target.agentCommand(['fuse', verb]));
  proc.stdin.end(JSON.stringify(request));
  const events: FuseEvent[] = [];
  let garbled = null as Error | null;
  let pending = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => {
    pending += d.toString('utf8');
    let nl = pending.indexOf('\n');
    while (nl >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      nl = pending.indexOf('\n');
      if (!line.startsWith('{')) continue; // A login shell's banner, not the agent's.
      try {
        const e = FuseEvent.decode(Buffer.from(line));
        events.push(e);
        onEvent(e);
      } catch (e) {
        garbled ??= e as Error;
      }
    }
  });
  proc.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-4096);
  });
  const code = await proc.exited;
  if (garbled) throw new Error(`the agent's answer to fuse ${verb} could not be read (${garbled.message})`);
  return { code, events, stderr: stderr.trim().split('\n').pop() ?? '' };
}
