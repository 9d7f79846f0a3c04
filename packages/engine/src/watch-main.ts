// The watch service (see watch.ts): started detached by a push, it watches one source directory with the native
// `Watcher` and answers over a Unix socket until it is idle for too long or told to stop.

import fs from 'node:fs';
import net from 'node:net';
import { loadNative, type NativeAddon } from '@skysync/chunking';
import { listenPrivate, nativeAddonPath } from '@skysync/transport';
import { ensureWatchDir, type WatchArgs } from './watch.js';

type Watcher = InstanceType<NativeAddon['Watcher']>;

const args = JSON.parse(process.argv[2] ?? '{}') as WatchArgs;
const debug = (m: string): void => {
  if (process.env.SKYSYNC_DEBUG) process.stderr.write(`${new Date().toISOString()} watch ${args.root}: ${m}\n`);
};

const native = loadNative();
let watcher: Watcher | null = null;
/** Why this directory cannot be watched: answered to every question, so that pushes do not start us again. */
let unsupported: string | null = native ? null : 'the native addon is not available';

function startWatcher(): void {
  if (!native || unsupported) return;
  try {
    watcher = new native.Watcher(args.root);
    debug('watching');
  } catch (e) {
    unsupported = (e as Error).message;
    debug(`cannot watch: ${unsupported}`);
  }
}

/** This script's and the addon's modification times, as the socket's key has them. */
function buildStamp(): string {
  const stamp = (f: string | null | undefined): string => {
    try {
      return f ? String(fs.statSync(f).mtimeMs) : '-';
    } catch {
      return 'gone';
    }
  };
  return `${stamp(process.argv[1])} ${stamp(process.env.SKYSYNC_NATIVE_PATH || nativeAddonPath())}`;
}

let server: net.Server | null = null;
let socketIno = -1;
let idle: NodeJS.Timeout | null = null;

function shutdown(why: string): void {
  debug(`shutting down: ${why}`);
  watcher?.close();
  watcher = null;
  server?.close();
  try {
    // Only remove the socket if it is still ours (a newer service may have replaced a stale one).
    if (fs.statSync(args.socket).ino === socketIno) fs.rmSync(args.socket, { force: true });
  } catch {
    // Already gone.
  }
  process.exit(0);
}

function touch(): void {
  if (idle) clearTimeout(idle);
  idle = setTimeout(() => shutdown('idle'), Math.max(1, args.idleSeconds) * 1000);
}

function answer(req: { op?: unknown; token?: unknown }): Record<string, unknown> {
  if (req.op === 'stop') {
    setImmediate(() => shutdown('asked'));
    return { state: 'stopping' };
  }
  if (req.op === 'status') return { state: unsupported ? 'unsupported' : watcher ? 'ok' : 'starting', pid: process.pid, root: args.root };
  if (req.op !== 'changes') return { state: 'error', reason: `unknown request ${String(req.op)}` };
  if (unsupported || !watcher) return { state: 'unsupported', token: null, full: true, reason: unsupported ?? 'not watching', dirs: [], subtrees: [] };
  const a = watcher.changesSince(typeof req.token === 'string' ? req.token : null);
  if (a.state === 'dead') {
    // The directory went away or moved: watch whatever is there now, from scratch (a new instance, so no old
    // token is ever vouched for).
    debug(`watcher stopped: ${a.reason}`);
    watcher.close();
    watcher = null;
    if (!fs.existsSync(args.root)) setImmediate(() => shutdown('the directory is gone'));
    else startWatcher();
  }
  return a as unknown as Record<string, unknown>;
}

function handle(sock: net.Socket): void {
  touch();
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('error', () => {});
  sock.on('data', (d: string) => {
    buf += d;
    const nl = buf.indexOf('\n');
    if (nl < 0) {
      if (buf.length > 1 << 20) sock.destroy();
      return;
    }
    let reply: Record<string, unknown>;
    try {
      reply = answer(JSON.parse(buf.slice(0, nl)) as { op?: unknown; token?: unknown });
    } catch (e) {
      reply = { state: 'error', reason: (e as Error).message };
    }
    sock.end(JSON.stringify(reply) + '\n');
  });
}

async function main(): Promise<void> {
  ensureWatchDir();
  const listening = await listenPrivate(args.socket, handle);
  if (!listening) {
    debug('another one listens');
    process.exit(0);
  }
  ({ server, ino: socketIno } = listening);
  startWatcher();
  touch();
  // Nobody asks about a directory that is gone, through a socket someone removed, or a service whose build was
  // replaced (the build is in the socket's key): leave without waiting for the idle timeout.
  const build = buildStamp();
  setInterval(() => {
    let ours = false;
    try {
      ours = fs.statSync(args.socket).ino === socketIno;
    } catch {
      // Removed.
    }
    if (!ours) shutdown('the socket was removed');
    else if (!fs.existsSync(args.root)) shutdown('the directory is gone');
    else if (buildStamp() !== build) shutdown('another build is installed');
  }, 5000).unref();
}

void main();
