// The bootstrap exec: one shell line that starts the installed agent with the first usable node, or, when there
// is none, prints one probe line (OS, arch, node version, gzip) for the client to decide how to install.

import type { Client, ClientChannel } from 'ssh2';
import { MAGIC } from '@skysync/protocol';
import { exec } from './connect.js';
import { shellQuote } from './shell.js';
import { ConnectError } from './target.js';

const PROBE = 'SKYSYNC-PROBE';

/**
 * Settings the agent takes from the client's environment: tracing, and how long the watch of a destination
 * outlives the agent (SKYSYNC_WATCH_PERSIST=0 leaves nothing behind on the nodes either). Whole numbers only: they
 * go into a shell line.
 */
function agentEnv(): string {
  const watch = process.env.SKYSYNC_WATCH_PERSIST;
  return [process.env.SKYSYNC_TRACE ? 'SKYSYNC_TRACE=1 ' : '', watch && /^\d{1,9}$/.test(watch) ? `SKYSYNC_WATCH_PERSIST=${watch} ` : ''].join('');
}

/** Finds node and starts the agent when it is installed; otherwise prints the probe line (and exits). */
export function startScript(hash: string): string {
  return [
    `A="$HOME/.skysync/agent/${hash}.cjs"`,
    'N=""',
    'for c in "$HOME/.skysync/node/bin/node" node nodejs; do if command -v "$c" >/dev/null 2>&1; then N="$c"; break; fi; done',
    `if [ -n "$N" ] && [ -f "$A" ]; then ${agentEnv()}exec "$N" "$A" serve; fi`,
    `V=none; if [ -n "$N" ]; then V=$("$N" --version 2>/dev/null || echo none); fi`,
    'G=raw; if command -v gzip >/dev/null 2>&1; then G=gz; fi',
    `printf '${PROBE} %s %s %s %s\\n' "$(uname -s)" "$(uname -m)" "$V" "$G"`,
  ].join('; ');
}

/** One shell line that runs the installed agent's subcommand `args` (quoted words), or says it is not installed. */
export function agentSubcommand(hash: string, args: string[]): string {
  const script = [
    `A="$HOME/.skysync/agent/${hash}.cjs"`,
    'N=""',
    'for c in "$HOME/.skysync/node/bin/node" node nodejs; do if command -v "$c" >/dev/null 2>&1; then N="$c"; break; fi; done',
    `if [ -n "$N" ] && [ -f "$A" ]; then exec "$N" "$A" ${args.map(shellQuote).join(' ')}; fi`,
    'echo "the skysync agent of this version is not installed on this node" >&2; exit 127',
  ].join('; ');
  return `sh -c ${shellQuote(script)}`;
}

/** One shell line, run by the remote login shell: start the agent if it is installed, else say what is there. */
export function bootstrapCommand(hash: string): string {
  return `sh -c ${shellQuote(startScript(hash))}`;
}

/** What a bootstrap exec found: the agent running on its channel, or the platform to install for. */
export type Probe = { kind: 'agent'; channel: ClientChannel; head: Buffer } | { kind: 'probe'; os: string; arch: string; node: string | null; gzip: boolean };

/**
 * Starts the bootstrap exec (or an install, whose `input` it writes first) and waits until it is clear whether the
 * agent answered or the probe did.
 */
export async function bootstrap(client: Client, command: string, input: Buffer[] = []): Promise<Probe> {
  const ch = await exec(client, command);
  for (const b of input) ch.write(b);
  let buf = Buffer.alloc(0);
  let stderr = '';
  ch.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 8192) stderr += d.toString('utf8');
  });
  return new Promise<Probe>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (buf.indexOf(MAGIC) >= 0) {
        ch.off('data', onData);
        ch.off('close', onClose);
        ch.pause();
        resolve({ kind: 'agent', channel: ch, head: buf });
        return;
      }
      const text = buf.toString('latin1');
      const at = text.indexOf(PROBE + ' ');
      if (at >= 0 && text.indexOf('\n', at) > 0) {
        const [, osName, arch, node, gz] = text.slice(at, text.indexOf('\n', at)).split(' ');
        ch.off('data', onData);
        ch.close();
        resolve({ kind: 'probe', os: (osName ?? '').toLowerCase(), arch: arch ?? '', node: node && node !== 'none' ? node : null, gzip: gz === 'gz' });
      }
    };
    const onClose = (): void =>
      reject(new ConnectError(`the remote shell exited before skysync could start (${(stderr || buf.toString('utf8')).trim().split('\n').slice(-2).join(' | ') || 'no output'})`));
    ch.on('data', onData);
    ch.on('close', onClose);
  });
}
