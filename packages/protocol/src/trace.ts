// SKYSYNC_TRACE=1: milestones of an operation on stderr, in ms since this process started (for finding where a
// push spends its time; off by default, and then a no-op). The wall clock's last seconds follow (`@s.ms`), so the
// client's and the agent's lines line up on one machine.
import { performance } from 'node:perf_hooks';

const on = !!process.env.SKYSYNC_TRACE;
export function trace(label: string): void {
  if (on) process.stderr.write(`[trace ${process.pid} +${performance.now().toFixed(0)}ms @${((Date.now() % 1e5) / 1e3).toFixed(3)}] ${label}\n`);
}
if (on) {
  trace('modules loaded');
  process.on('exit', () => trace('exit'));
}
