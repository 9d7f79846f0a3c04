// A deadline on silence: an agent that is stopped or wedged (alive, so no exit and no closed pipe tells) would
// otherwise hold the command forever, the client waiting for a frame or for its send buffer to drain.

import type { AgentChannel } from './target.js';

/** Seconds an agent may leave the client's bytes unread (SKYSYNC_AGENT_IDLE_TIMEOUT; 0 turns the deadline off). */
export function agentIdleSeconds(): number {
  const v = process.env.SKYSYNC_AGENT_IDLE_TIMEOUT;
  const n = v === undefined || v === '' ? NaN : Number(v);
  return Number.isFinite(n) && n >= 0 ? n : 600;
}

/**
 * Fails the channel (an error on its input and output, which the connection reports in one line) once the client
 * has had bytes the agent would not take, and the agent said nothing, for `seconds`: the agent stopped reading.
 * Silence with nothing pending is left alone: a session waits between operations while other nodes sync, and an
 * agent may think (a drift check, its lock wait of 60 s) before it answers.
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
      if (output.writableLength === 0) last = Date.now();
      if (Date.now() - last < seconds * 1000) return;
      clearInterval(timer);
      const e = new Error(`${what} took nothing and said nothing for ${seconds} s (stopped or wedged); gave up on it`);
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
