// The agent: `node agent.cjs serve [--home DIR]` speaks the protocol on stdin/stdout; everything it says for
// humans goes to stderr. `node agent.cjs version` prints its version and capabilities as JSON.

import { createFallbackChunker, createNativeChunker, loadNative, type NativeAddon } from '@skysync/chunking';
import type { WatchAddon } from '@skysync/service';
import {
  Begin,
  Connection,
  Frame,
  type ErrorMessage,
  type FrameMessage,
  PROTOCOL_VERSION,
  ProtocolError,
  checkHello,
  frameName,
  makeHello,
  supportedCompressions,
  trace,
} from '@skysync/protocol';
import path from 'node:path';
import { defaultHome, type AgentContext } from './context.js';
import { servePull } from './pull.js';
import { closeRelay, servePush } from './push.js';
import { runDestWatch } from './dest-watch.js';
import { serveBucket } from './bucket/serve.js';

export const AGENT_VERSION = '0.1.0';

/**
 * The addon installed with this agent: `<hash>.node` beside `<hash>.cjs`. Only that one: an addon left by
 * another skysync version may lack functions this agent calls. (Local targets pass SKYSYNC_NATIVE_PATH.)
 */
function nativeCandidates(): string[] {
  if (typeof __filename !== 'string' || !__filename.endsWith('.cjs')) return [];
  return [__filename.slice(0, -'.cjs'.length) + '.node'];
}

export async function context(home: string): Promise<AgentContext> {
  const native: NativeAddon | null = loadNative(nativeCandidates());
  const chunker = native ? createNativeChunker(native) : await createFallbackChunker();
  const log = (m: string): void => void process.stderr.write(`skysync-agent: ${m}\n`);
  return { home, native, chunker, log };
}

export async function serve(home: string): Promise<void> {
  // A client that has its answer leaves without waiting for this process: a write after that (EPIPE) must not
  // end it before it has recorded its state.
  for (const out of [process.stdout, process.stderr]) out.on('error', () => {});
  const ctx = await context(home);
  const conn = new Connection(process.stdin, process.stdout);
  if (!(await serveConnection(conn, ctx))) process.exitCode = 1;
}

/**
 * Serves one client's session on `conn` until it ends. Whatever goes wrong is answered with an error frame;
 * false then. (Tests drive it in process, with hostile frames.)
 */
export async function serveConnection(conn: Connection, ctx: AgentContext): Promise<boolean> {
  const hello = makeHello({
    role: 'agent',
    software: AGENT_VERSION,
    compression: supportedCompressions(ctx.native),
    native: ctx.native !== null,
    capabilities: ['relay', 'lanes', 'keep'],
  });
  trace('agent: started');
  try {
    await conn.sendJson(Frame.Hello, hello);
    const client = checkHello((await conn.expect(Frame.Hello)).payload, 'client', 'the client');
    // A session carries operations one after another (the workdir, then each file mount), so one connection
    // and one agent process serve them all.
    let f = await conn.next();
    while (f) {
      // Any frame after an operation means the client is done with it, and so are the nodes it relayed to.
      await closeRelay(ctx);
      // `end` after an operation: the client keeps this agent for a later command and holds nothing meanwhile.
      if (f.type === Frame.End) {
        f = await conn.next();
        continue;
      }
      if (f.type !== Frame.Begin) throw new ProtocolError(`expected begin, got ${frameName(f.type)}`);
      const begin = Begin.decode(f.payload);
      trace(`agent: ${begin.op}`);
      let next: FrameMessage | null | undefined;
      if (begin.op === 'push') next = await servePush(conn, begin, ctx);
      else if (begin.op === 'bucket') await serveBucket(conn, begin, ctx);
      else await servePull(conn, begin, client, ctx);
      f = next !== undefined ? next : await conn.next();
    }
    return true;
  } catch (e) {
    const err: Error & { code?: unknown } = e instanceof Error ? e : new Error(String(e));
    ctx.log(err.message);
    const code = typeof err.code === 'string' ? err.code : err.name || 'error';
    await conn.sendJson(Frame.Error, { message: err.message, code } satisfies ErrorMessage).catch(() => {});
    return false;
  } finally {
    await closeRelay(ctx).catch(() => {});
    conn.end();
  }
}

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  let home = defaultHome();
  const i = rest.indexOf('--home');
  if (i >= 0 && rest[i + 1]) home = path.resolve(rest[i + 1]!);
  if (cmd === 'serve') return serve(home);
  if (cmd === 'watch' && rest[0]) return runDestWatch(rest[0], loadNative(nativeCandidates()) as WatchAddon | null);
  if (cmd === 'fuse' && rest[0]) {
    const { runFuse } = await import('./fuse/commands.js');
    const input = await new Promise<string>((resolve) => {
      let text = '';
      process.stdin.setEncoding('utf8');
      process.stdin.on('data', (d: string) => (text += d));
      process.stdin.on('end', () => resolve(text));
    });
    process.exitCode = await runFuse(rest[0], home, input);
    return;
  }
  if (cmd === 'version') {
    const native = loadNative(nativeCandidates());
    process.stdout.write(JSON.stringify({ version: AGENT_VERSION, protocol: PROTOCOL_VERSION, native: native !== null }) + '\n');
    return;
  }
  process.stderr.write('usage: agent serve [--home DIR] | agent fuse mount|flush|unmount|status [--home DIR] | agent version\n');
  process.exitCode = 2;
}
