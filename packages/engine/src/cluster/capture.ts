import type { Target } from '@skysync/transport';

/** Runs a short command on a node (nothing on its stdin) and collects what it printed. */
export async function capture(target: Target, command: string): Promise<{ code: number | null; out: string; err: string }> {
  const proc = await target.exec(command);
  proc.stdin.end();
  let out = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
  proc.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
  const code = await proc.exited;
  return { code, out, err };
}
