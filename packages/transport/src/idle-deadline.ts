// A deadline on silence: an agent that is stopped or wedged (alive, so no exit and no closed pipe tells) would
// otherwise hold the command forever, the client waiting for a frame or for its send buffer to drain.

import type { AgentChannel } from './target.js';

/** Seconds an agent channel may carry nothing either way (SKYSYNC_AGENT_IDLE_TIMEOUT; 0 turns the deadline off). */
export function agentIdleSeconds(): number {
  const v = process.env.SKYSYNC_AGENT_IDLE_TIMEOUT;
  const n = v === undefined || v === '' ? NaN : Number(v);
  return Number.isFinite(n) && n >= 0 ? n : 600;
}

/**
 * Fails the channel (an error on its input and output, which the connection reports in one line) once nothing was read from
 * or written to it for `seconds`. Every step of a session moves bytes well within that: a scan, a drift check and
 * the agent's lock wait (60 s, then an error frame) are the longest silences.
 */
export function withIdleDeadline(ch: AgentChannel, what: string, seconds = agentIdleSeconds()): AgentChannel {
  if (seconds <= 0) return ch;
  let last = Date.now();
  // Counted where the bytes pass, not by a listener (a 'data' listener would start the input flowing before its
  // reader attached) nor a stream in between (the data path gets no extra turn of the loop).
  const input = ch.input;
  const emit = input.emit.bind(input) as (event: string | symbol, ...args: unknown[]) => boolean;
  input.emit = ((event: string | symbol, ...args: unknown[]) => {
    if (event === 'data') last = Date.now();
    return emit(event, ...args);
  }) as typeof input.emit;
  const output = ch.output;
  const write = output.write.bind(output) as (...args: unknown[]) => boolean;
  output.write = ((...args: unknown[]) => {
    last = Date.now();
    return write(...args);
  }) as typeof output.write;
  const timer = setInterval(
    () => {
      if (Date.now() - last < seconds * 1000) return;
      clearInterval(timer);
      const e = new Error(`${what} sent nothing and took nothing for ${seconds} s (stopped or wedged); gave up on it`);
      // Both ways: the client may be waiting for a frame, or for its writes to drain.
      ch.input.destroy(e);
      ch.output.destroy(e);
      void ch.close().catch(() => {});
    },
    Math.min(seconds * 250, 30_000),
  );
  timer.unref();
  const stop = (): void => clearInterval(timer);
  void ch.exited.then(stop, stop);
  ch.input.once('close', stop);
  return ch;
}
