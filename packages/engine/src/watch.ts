// The watch service's client. A push asks it what changed in the source since the token saved with the tree it
// compares against, and scans only those directories (`scanPartial`); with no answer it scans everything. One
// small background process per source directory (watch-main.ts) holds a native `Watcher` and answers over a Unix
// socket in a 0700 directory (`ctl/watch/`, beside the warm connections' sockets), so several targets (local or
// SSH) pushing the same source share it. It exits after SKYSYNC_WATCH_PERSIST idle seconds (default 600; 0 turns
// watching off). A command never waits for it to start: the first push after it was started scans everything, and
// so does any push whose question it cannot answer at once. The service and its protocol: @skysync/service.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { askWatchService, watchServiceKey, fullAnswer, stopWatchService, watchPersistSeconds, watchServiceStatus, type WatchAnswer, type WatchServiceArgs } from '@skysync/service';
import { ensureControlDir, nativeAddonPath } from '@skysync/transport';

export { watchPersistSeconds, type WatchAnswer };

function serviceMain(): string {
  // By package name, so that it resolves from the bundled CLI as well as from this package.
  return createRequire(import.meta.url).resolve('@skysync/engine/watch-main');
}

/** The socket of the service watching `root`, keyed by the root, the service's build (its code and the addon
 * that holds the watcher) and the user. */
export function watchSocketPath(root: string): string {
  const addon = process.env.SKYSYNC_NATIVE_PATH || nativeAddonPath();
  return path.join(ensureWatchDir(), `w-${watchServiceKey(root, [serviceMain(), addon])}.sock`);
}

/** Beside the warm connections' sockets, apart from them (what is there is theirs), and as private. */
export function ensureWatchDir(): string {
  const dir = path.join(ensureControlDir(), 'watch');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  if (process.getuid && fs.statSync(dir).uid !== process.getuid()) throw new Error(`${dir} belongs to another user`);
  return dir;
}

function spawnService(args: WatchServiceArgs): void {
  const out = process.env.SKYSYNC_DEBUG ? fs.openSync(`${args.socket}.log`, 'a', 0o600) : 'ignore';
  // Nothing in it uses TLS: a CA bundle would only cost node's start.
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const child = spawn(process.execPath, [serviceMain(), JSON.stringify(args)], { detached: true, stdio: ['ignore', out, out], env });
  child.unref();
}

/**
 * What changed under `root` since `token` (the one saved with the tree about to be compared against). Null when
 * watching is off. Starts the service when there is none (without waiting for it); a service that does not
 * answer within `timeoutMs` is passed over: the push scans everything, as it would without one.
 */
export async function askWatch(root: string, token: string | null, timeoutMs = 1000): Promise<WatchAnswer | null> {
  const idle = watchPersistSeconds();
  if (idle === 0 || process.platform !== 'linux') return null;
  let socket: string;
  try {
    socket = watchSocketPath(root);
  } catch (e) {
    return fullAnswer(`no watch service: ${(e as Error).message}`);
  }
  return askWatchService(socket, token, timeoutMs, () => spawnService({ root, socket, idleSeconds: idle }));
}

/** The service watching `root`: its process id, or null when there is none. */
export async function watchStatus(root: string): Promise<{ state: string; pid: number } | null> {
  try {
    return await watchServiceStatus(watchSocketPath(root));
  } catch {
    return null;
  }
}

/** Asks the service watching `root` to end. True when there was one. */
export async function stopWatch(root: string): Promise<boolean> {
  try {
    return await stopWatchService(watchSocketPath(root));
  } catch {
    return false;
  }
}
