// Watching a destination beyond one agent process. A drift check stats every file the agent placed; on a cold
// page cache that is the longest step of a no-op push (~200 ms for 35k files here), and a command without a warm
// connection starts a new agent each time. So the agent leaves a watch service behind (@skysync/service, the one
// the client runs for its source), keyed by the destination and this agent's build, with its socket in
// `~/.skysync/run`. The next agent asks it what changed since the token saved with the destination's state
// (store.ts), and checks only those directories. It never writes anything: it only reads inotify events.

import { spawn } from 'node:child_process';
import path from 'node:path';
import { askWatchService, watchServiceKey, serveWatch, watchPersistSeconds, type WatchAddon, type WatchAnswer, type WatchServiceArgs } from '@skysync/service';
import { MAX_SOCKET_PATH, ensureRunDir } from './lanes.js';

/** The files this agent runs from: its bundle and the addon beside it (or the one a local target names). */
function buildFiles(): string[] | null {
  if (typeof __filename !== 'string' || !__filename.endsWith('.cjs')) return null;
  const addon = process.env.SKYSYNC_NATIVE_PATH || `${__filename.slice(0, -'.cjs'.length)}.node`;
  return [__filename, addon];
}

function socketFor(home: string, root: string, build: string[]): string | null {
  const socket = path.join(ensureRunDir(home), `watch-${watchServiceKey(root, build)}.sock`);
  return Buffer.byteLength(socket) > MAX_SOCKET_PATH ? null : socket;
}

/**
 * What changed under the destination `root` since `token`; null when watching is off or cannot work here (then
 * the drift check is a full one). Starts the service when none answers, without waiting for it.
 */
export async function askDestWatch(home: string, root: string, token: string | null, timeoutMs = 300): Promise<WatchAnswer | null> {
  const idleSeconds = watchPersistSeconds();
  const build = buildFiles();
  if (idleSeconds === 0 || process.platform !== 'linux' || !build) return null;
  let socket: string | null;
  try {
    socket = socketFor(home, root, build);
  } catch {
    return null;
  }
  if (!socket) return null;
  const args: WatchServiceArgs = { root, socket, idleSeconds, build };
  return askWatchService(socket, token, timeoutMs, () => {
    const child = spawn(process.execPath, [build[0]!, 'watch', JSON.stringify(args)], { detached: true, stdio: 'ignore' });
    child.unref();
  });
}

/** `agent watch ARGS`: the service itself, in its own process. */
export function runDestWatch(argsJson: string, addon: WatchAddon | null): Promise<void> {
  return serveWatch(JSON.parse(argsJson) as WatchServiceArgs, addon);
}
