// The watch service: one background process per watched directory holds the addon's inotify `Watcher`
// (native/core/src/watch.rs) and answers over a private Unix socket what changed since a token. The client
// watches its source with it (engine/watch.ts), the agent its destinations (agent/dest-watch.ts), so a command
// that starts cold still scans or checks only what changed. It leaves after `idleSeconds` without a question,
// when told to stop, when its socket or directory is gone, or when another build replaced the files it ran from.
//
// Protocol: one JSON line each way per connection. Request {op: 'changes', token} (or 'status', 'stop'); answer
// {state: 'ok' | 'starting' | 'dead' | 'unsupported', token, full, reason?, dirs[], subtrees[]}, paths as latin1
// strings (raw bytes).

import fs from 'node:fs';
import type net from 'node:net';
import { listenPrivate } from './listen.js';
import { requestLine } from './request.js';

export interface WatchServiceArgs {
  root: string;
  socket: string;
  idleSeconds: number;
  /** Files the service runs from (its script, the addon): when one is replaced, the service leaves. */
  build?: string[];
}

/** What a service answers about changes, as its clients use it. */
export interface WatchAnswer {
  /** The token to save with the tree of the scan about to start; null when the service cannot give one yet. */
  token: string | null;
  /** Scan everything: nothing (or not enough) is known since the token asked about. */
  full: boolean;
  reason?: string;
  dirs: string[];
  subtrees: string[];
}

interface Watcher {
  changesSince(token: string | null): { state: string; token?: string | null; full: boolean; reason?: string; dirs: string[]; subtrees: string[] };
  close(): void;
}

/** The part of the addon the service needs. */
export interface WatchAddon {
  Watcher: new (root: string) => Watcher;
}

export const fullAnswer = (reason: string): WatchAnswer => ({ token: null, full: true, reason, dirs: [], subtrees: [] });

/** Seconds a watch service lives without a question (SKYSYNC_WATCH_PERSIST; 0: no watching at all). */
export function watchPersistSeconds(): number {
  const v = process.env.SKYSYNC_WATCH_PERSIST;
  if (v === undefined || v === '') return 600;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : 600;
}

/**
 * Asks the service at `socket` what changed since `token`. When none listens there (or a dead one's socket is
 * left), `start` is called on the next turn, without waiting for the service: this question gets a full answer.
 */
export async function askWatchService(socket: string, token: string | null, timeoutMs: number, start: () => void): Promise<WatchAnswer> {
  try {
    const a = await requestLine(socket, { op: 'changes', token }, timeoutMs);
    const list = (v: unknown): string[] => (Array.isArray(v) ? v.filter((d): d is string => typeof d === 'string') : []);
    const tok = a.state === 'ok' && typeof a.token === 'string' ? a.token : null;
    const reason = typeof a.reason === 'string' ? a.reason : undefined;
    if (tok === null) return fullAnswer(reason ?? `watch service ${String(a.state)}`);
    return { token: tok, full: a.full !== false, ...(reason ? { reason } : {}), dirs: list(a.dirs), subtrees: list(a.subtrees) };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') {
      if (code === 'ECONNREFUSED') fs.rmSync(socket, { force: true });
      // A spawn holds this thread for milliseconds: on the next turn, it overlaps the work that runs meanwhile.
      setImmediate(() => {
        try {
          start();
        } catch {
          // Only a missed speed-up.
        }
      });
      return fullAnswer('the watch service was not running (started now)');
    }
    return fullAnswer(`watch service: ${(e as Error).message}`);
  }
}

/** The service at `socket`: its state and process id, or null when none answers. */
export async function watchServiceStatus(socket: string): Promise<{ state: string; pid: number } | null> {
  try {
    const a = await requestLine(socket, { op: 'status' }, 2000);
    return { state: String(a.state), pid: Number(a.pid) };
  } catch {
    return null;
  }
}

/** Asks the service at `socket` to end. True when there was one. */
export async function stopWatchService(socket: string): Promise<boolean> {
  try {
    await requestLine(socket, { op: 'stop' }, 2000);
    return true;
  } catch {
    return false;
  }
}

/**
 * The watcher of one directory, started again from scratch when the directory goes away or moves. Without an
 * addon (or when the directory cannot be watched) it answers every question with why, so that clients do not
 * start the service again.
 */
class RootWatch {
  private watcher: Watcher | null = null;
  private unsupported: string | null;

  constructor(
    private readonly root: string,
    private readonly addon: WatchAddon | null,
    private readonly debug: (m: string) => void,
    /** Called when the directory is gone: nothing is left to watch. */
    private readonly leave: (why: string) => void,
  ) {
    this.unsupported = addon ? null : 'the native addon cannot watch';
  }

  start(): void {
    if (!this.addon || this.unsupported) return;
    try {
      this.watcher = new this.addon.Watcher(this.root);
      this.debug('watching');
    } catch (e) {
      this.unsupported = (e as Error).message;
      this.debug(`cannot watch: ${this.unsupported}`);
    }
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
  }

  get state(): 'unsupported' | 'ok' | 'starting' {
    return this.unsupported ? 'unsupported' : this.watcher ? 'ok' : 'starting';
  }

  changesSince(token: string | null): Record<string, unknown> {
    if (this.unsupported || !this.watcher) {
      return { state: 'unsupported', token: null, full: true, reason: this.unsupported ?? 'not watching', dirs: [], subtrees: [] };
    }
    const a = this.watcher.changesSince(token);
    if (a.state === 'dead') {
      // The directory went away or moved: watch whatever is there now, from scratch (a new instance, so no old
      // token is ever vouched for).
      this.debug(`watcher stopped: ${a.reason}`);
      this.close();
      if (!fs.existsSync(this.root)) setImmediate(() => this.leave('the directory is gone'));
      else this.start();
    }
    return a as unknown as Record<string, unknown>;
  }
}

/** The modification times of the files the service runs from, to notice another build replacing them. */
function buildStamp(files: string[]): string {
  return files
    .map((f) => {
      try {
        return String(fs.statSync(f).mtimeMs);
      } catch {
        return 'gone';
      }
    })
    .join(' ');
}

type Request = { op?: unknown; token?: unknown };

/** A connection's handler: one JSON line in, `answer`'s reply as one line out. */
function answerOneLine(answer: (req: Request) => Record<string, unknown>, onConnection: () => void): (sock: net.Socket) => void {
  return (sock) => {
    onConnection();
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
        reply = answer(JSON.parse(buf.slice(0, nl)) as Request);
      } catch (e) {
        reply = { state: 'error', reason: (e as Error).message };
      }
      sock.end(JSON.stringify(reply) + '\n');
    });
  };
}

/** Runs the service in this process until it leaves (then the process exits). SKYSYNC_DEBUG logs to stderr. */
export async function serveWatch(args: WatchServiceArgs, addon: WatchAddon | null): Promise<void> {
  const debug = (m: string): void => {
    if (process.env.SKYSYNC_DEBUG) process.stderr.write(`${new Date().toISOString()} watch ${args.root}: ${m}\n`);
  };
  const watch = new RootWatch(args.root, addon, debug, (why) => shutdown(why));
  let server: net.Server | null = null;
  let socketIno = -1;
  let idle: NodeJS.Timeout | null = null;

  const shutdown = (why: string): void => {
    debug(`shutting down: ${why}`);
    watch.close();
    server?.close();
    try {
      // Only remove the socket if it is still ours (a newer service may have replaced a stale one).
      if (fs.statSync(args.socket).ino === socketIno) fs.rmSync(args.socket, { force: true });
    } catch {
      // Already gone.
    }
    process.exit(0);
  };

  const touch = (): void => {
    if (idle) clearTimeout(idle);
    idle = setTimeout(() => shutdown('idle'), Math.max(1, args.idleSeconds) * 1000);
  };

  const answer = (req: Request): Record<string, unknown> => {
    if (req.op === 'stop') {
      setImmediate(() => shutdown('asked'));
      return { state: 'stopping' };
    }
    if (req.op === 'status') return { state: watch.state, pid: process.pid, root: args.root };
    if (req.op !== 'changes') return { state: 'error', reason: `unknown request ${String(req.op)}` };
    return watch.changesSince(typeof req.token === 'string' ? req.token : null);
  };

  const listening = await listenPrivate(args.socket, answerOneLine(answer, touch));
  if (!listening) {
    debug('another one listens');
    process.exit(0);
  }
  ({ server, ino: socketIno } = listening);
  watch.start();
  touch();
  leaveWhenUnwanted(args, socketIno, shutdown);
}

/**
 * Nobody asks about a directory that is gone, through a socket someone removed, or a service whose build was
 * replaced (the build is in the socket's key): leave without waiting for the idle timeout.
 */
function leaveWhenUnwanted(args: WatchServiceArgs, socketIno: number, shutdown: (why: string) => void): void {
  const build = buildStamp(args.build ?? []);
  setInterval(() => {
    let ours = false;
    try {
      ours = fs.statSync(args.socket).ino === socketIno;
    } catch {
      // Removed.
    }
    if (!ours) shutdown('the socket was removed');
    else if (!fs.existsSync(args.root)) shutdown('the directory is gone');
    else if (buildStamp(args.build ?? []) !== build) shutdown('another build is installed');
  }, 5000).unref();
}
