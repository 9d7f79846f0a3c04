// Warm connections, as OpenSSH's ControlPersist: after a command, a small background process keeps the SSH
// connection to the target open; later commands reach the remote through it over a Unix socket that only the
// user can open (the socket's directory is 0700), and skip the TCP, key exchange and authentication round trips.
// It exits after an idle timeout, when the connection drops, or on `skysync disconnect`. When it is gone the
// client connects directly, as if it had never existed.
//
// One socket connection carries one channel (the agent, or one command). Both ways it is framed as the agent's
// wire is (@skysync/protocol: MAGIC, then frames of u32 LE length, u8 type, payload), with the types below.
// Client: OPEN {kind, command?, path?}, then STDIN..., and STDIN_END, or RELEASE (the agent is between
// operations: keep it running for the next command). Daemon: OPENED {logs} or FAILED {name, message}, then
// STDOUT..., STDERR..., EXIT {code}. After EXIT the daemon reads nothing more of that channel: the client stops
// writing and closes, so neither side waits on the other's buffer.

// A released agent is reused: the next client's greeting (magic and hello) is checked against the one the agent
// got first and not sent again, and the agent's own greeting is replayed from memory. A no-op push through a
// warm connection then costs one request and one answer on the wire, with no channel opened or closed.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { createRequire } from 'node:module';
import { FrameDecoder, type FrameMessage, MAGIC, encodeFrame } from '@skysync/protocol';
import { stateRoot } from './state-root.js';
import { ConnectError, NoAgentError, type AgentChannel, type RemoteProcess, type RemoteSocket } from './target.js';

export enum CtlFrame {
  Open = 1,
  Stdin = 2,
  StdinEnd = 3,
  Release = 4,
  Opened = 10,
  Failed = 11,
  Stdout = 12,
  Stderr = 13,
  Exit = 14,
}

/** Larger writes go out as several frames, well under the wire's frame limit. */
const CTL_CHUNK = 1 << 20;

/** One control frame (or several, for a payload above CTL_CHUNK: only STDIN/STDOUT/STDERR get that large). */
export function encodeCtl(type: CtlFrame, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  if (body.length <= CTL_CHUNK) return encodeFrame(type, body);
  const parts: Buffer[] = [];
  for (let at = 0; at < body.length; at += CTL_CHUNK) parts.push(encodeFrame(type, body.subarray(at, at + CTL_CHUNK)));
  return Buffer.concat(parts);
}

/** Seconds a warm connection lives without use (SKYSYNC_CONTROL_PERSIST; 0 turns warm connections off). */
export function persistSeconds(): number {
  const v = process.env.SKYSYNC_CONTROL_PERSIST;
  if (v === undefined || v === '') return 300;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : 300;
}

function controlDir(): string {
  const dir = path.join(stateRoot(), 'ctl');
  // Unix socket paths are limited to ~107 bytes.
  if (dir.length > 60) return path.join(os.tmpdir(), `skysync-ctl-${process.getuid?.() ?? 'u'}`);
  return dir;
}

/**
 * The part of a socket's name that is the target's alone (its spec and the user), so every warm connection to
 * it is found again after its config or skysync changed.
 */
function targetTag(spec: string): string {
  return createHash('sha256')
    .update(JSON.stringify({ spec, uid: process.getuid?.() }))
    .digest('hex')
    .slice(0, 12);
}

/**
 * The socket for a target, keyed by everything that changes where or how it connects: `<target>-<key>.sock`,
 * the target's tag first (see {@link controlSocketsOf}).
 */
export function controlSocketPath(spec: string, configFile: string | undefined, version: string): string {
  let configStamp = '';
  try {
    if (configFile) configStamp = String(fs.statSync(configFile).mtimeMs);
  } catch {
    // A missing config file is the connect's problem, not the key's.
  }
  const key = JSON.stringify({ spec, config: configFile ? path.resolve(configFile) : null, configStamp, version, uid: process.getuid?.() });
  return path.join(controlDir(), `${targetTag(spec)}-${createHash('sha256').update(key).digest('hex').slice(0, 24)}.sock`);
}

/** Every warm connection's socket for `spec`, whichever config, config version or skysync made it. */
export function controlSocketsOf(spec: string): string[] {
  const dir = controlDir();
  const prefix = `${targetTag(spec)}-`;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => n.startsWith(prefix) && n.endsWith('.sock')).map((n) => path.join(dir, n));
}

/** Ends every warm connection to `spec` (see {@link controlSocketsOf}). True when there was one. */
export async function controlShutdownAll(spec: string): Promise<boolean> {
  const ended = await Promise.all(controlSocketsOf(spec).map((s) => controlShutdown(s)));
  return ended.some(Boolean);
}

export function ensureControlDir(): string {
  const dir = controlDir();
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Whoever can traverse the directory can use the connection: only the user.
  fs.chmodSync(dir, 0o700);
  const st = fs.statSync(dir);
  if (process.getuid && st.uid !== process.getuid()) throw new Error(`${dir} belongs to another user`);
  return dir;
}

/** Thrown when the background process is not there (or went away before answering): connect directly. */
export class ControlGone extends Error {
  override name = 'ControlGone';
}

function rebuildError(name: string, message: string): Error {
  if (name === 'NoAgentError') return new NoAgentError(message);
  if (name === 'ConnectError') return new ConnectError(message);
  return new Error(message);
}

interface OpenedChannel {
  stdout: PassThrough;
  stderr: PassThrough;
  stdin: Writable;
  exited: Promise<number | null>;
  logs: string[];
  /** Ends the channel's input with RELEASE instead of STDIN_END (after anything written before). */
  release(): void;
  /** Drops the connection to the background process (one that no longer answers). */
  abort(): void;
}

/**
 * The channel's input as a stream: STDIN frames, then STDIN_END (or RELEASE when `releasing()`). A write that
 * waits for the socket to drain is in `waiting` until then, so a close can fail it instead of leaving it forever.
 */
function channelInput(sock: net.Socket, waiting: Set<(e?: Error) => void>, closedError: () => Error, releasing: () => boolean): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (sock.destroyed) return cb(closedError());
      if (sock.write(encodeCtl(CtlFrame.Stdin, chunk))) return cb();
      const done = (e?: Error): void => {
        waiting.delete(done);
        sock.off('drain', onDrain);
        cb(e);
      };
      const onDrain = (): void => done();
      waiting.add(done);
      sock.once('drain', onDrain);
    },
    final(cb) {
      if (!sock.destroyed) sock.write(encodeCtl(releasing() ? CtlFrame.Release : CtlFrame.StdinEnd));
      cb();
    },
  });
}

/** How long the background process may take to answer a request before the command connects directly. */
const OPEN_DEADLINE_MS = 30_000;

/** Opens one channel through the background process. */
async function openChannel(socketPath: string, request: { kind: 'agent' | 'exec' | 'shutdown' | 'socket'; command?: string; path?: string }): Promise<OpenedChannel> {
  if (!fs.existsSync(socketPath)) throw new ControlGone('no warm connection');
  const sock = net.createConnection(socketPath);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', (e: NodeJS.ErrnoException) => {
      // Nobody listens: a leftover of a process that died. Remove it so the next command does not try again.
      if (e.code === 'ECONNREFUSED') fs.rmSync(socketPath, { force: true });
      reject(new ControlGone(e.message));
    });
  });
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const decoder = new FrameDecoder();
  let settle: { resolve: (logs: string[]) => void; reject: (e: Error) => void } | null = null;
  const opened = new Promise<string[]>((resolve, reject) => (settle = { resolve, reject }));
  // A background process that accepts but never answers (wedged) must not hold the command: connect directly,
  // and let the next command leave a new one instead of waiting on this one again.
  const openTimer = setTimeout(() => {
    fs.rmSync(socketPath, { force: true });
    settle?.reject(new ControlGone('the warm connection did not answer'));
    settle = null;
    sock.destroy();
  }, OPEN_DEADLINE_MS);
  let exitCode: number | null = null;
  let exitSaid = false;
  const closedError = (): Error => new Error(exitSaid ? 'the agent ended before the command finished' : 'the warm connection closed');
  /** Writes waiting for the socket to drain: failed when it closes instead, so no sender waits forever. */
  const waitingWrites = new Set<(e?: Error) => void>();
  const exited = new Promise<number | null>((resolve) => {
    sock.on('close', () => {
      clearTimeout(openTimer);
      stdout.end();
      stderr.end();
      settle?.reject(new ControlGone('the warm connection closed before answering'));
      for (const cb of [...waitingWrites]) cb(closedError());
      resolve(exitCode);
    });
  });
  sock.on('error', () => {});
  // The daemon's end is the channel's end: it reads nothing after EXIT, so unsent input is dropped, not waited on.
  sock.on('end', () => sock.destroy());
  sock.on('data', (chunk: Buffer) => {
    let frames: FrameMessage[];
    try {
      frames = decoder.push(chunk);
    } catch {
      sock.destroy();
      return;
    }
    for (const f of frames) {
      if (f.type === CtlFrame.Opened) {
        clearTimeout(openTimer);
        settle?.resolve((JSON.parse(f.payload.toString('utf8')) as { logs?: string[] }).logs ?? []);
        settle = null;
      } else if (f.type === CtlFrame.Failed) {
        clearTimeout(openTimer);
        const e = JSON.parse(f.payload.toString('utf8')) as { name: string; message: string };
        settle?.reject(rebuildError(e.name, e.message));
        settle = null;
      } else if (f.type === CtlFrame.Stdout) {
        if (!stdout.write(f.payload)) {
          sock.pause();
          stdout.once('drain', () => sock.resume());
        }
      } else if (f.type === CtlFrame.Stderr) {
        stderr.write(f.payload);
      } else if (f.type === CtlFrame.Exit) {
        exitCode = (JSON.parse(f.payload.toString('utf8')) as { code: number | null }).code;
        exitSaid = true;
      }
    }
  });
  sock.write(Buffer.concat([MAGIC, encodeCtl(CtlFrame.Open, JSON.stringify(request))]));
  let releasing = false;
  const stdin = channelInput(sock, waitingWrites, closedError, () => releasing);
  stdin.on('error', () => {});
  const logs = await opened;
  const release = (): void => {
    releasing = true;
    stdin.end();
  };
  return { stdout, stderr, stdin, exited, logs, release, abort: () => sock.destroy() };
}

export async function controlExec(socketPath: string, command: string, log?: (m: string) => void): Promise<RemoteProcess> {
  const ch = await openChannel(socketPath, { kind: 'exec', command });
  for (const l of ch.logs) log?.(l);
  return { stdout: ch.stdout, stderr: ch.stderr, stdin: ch.stdin, exited: ch.exited };
}

/** A Unix socket on the remote, reached through the warm connection's SSH session. */
export async function controlSocketStream(socketPath: string, remotePath: string): Promise<RemoteSocket> {
  const ch = await openChannel(socketPath, { kind: 'socket', path: remotePath });
  return { input: ch.stdout, output: ch.stdin, close: () => ch.stdin.end() };
}

export async function controlAgent(socketPath: string, log?: (m: string) => void): Promise<AgentChannel> {
  const ch = await openChannel(socketPath, { kind: 'agent' });
  for (const l of ch.logs) log?.(l);
  let stderr = '';
  ch.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 64 * 1024) stderr += d.toString('utf8');
  });
  return {
    input: ch.stdout,
    output: ch.stdin,
    stderr: () => stderr,
    exited: ch.exited,
    close: async () => {
      ch.stdin.end();
      const t = setTimeout(() => ch.abort(), 10_000);
      await ch.exited;
      clearTimeout(t);
    },
    release: async () => {
      ch.release();
      const t = setTimeout(() => ch.abort(), 10_000);
      await ch.exited;
      clearTimeout(t);
    },
  };
}

/** Asks the background process to end. True when there was one. */
export async function controlShutdown(socketPath: string): Promise<boolean> {
  try {
    const ch = await openChannel(socketPath, { kind: 'shutdown' });
    await ch.exited;
    return true;
  } catch {
    return false;
  }
}

export interface DaemonArgs {
  spec: string;
  socket: string;
  idleSeconds: number;
  options: { configFile?: string; installNode?: boolean; nodeUrl?: string };
  /** A `local:` target: the agent runs on this machine with this home. */
  local?: { home: string };
}

/** Starts the background process for a target, detached; it connects on its own. */
export function spawnControlDaemon(args: DaemonArgs): void {
  // By package name, so that it resolves from the bundled CLI as well as from this package.
  const main = createRequire(import.meta.url).resolve('@skysync/transport/control-main');
  // SKYSYNC_DEBUG: the background process's own errors go to a log file beside its socket.
  const out = process.env.SKYSYNC_DEBUG ? fs.openSync(`${args.socket}.log`, 'a', 0o600) : 'ignore';
  const child = spawn(process.execPath, [main, JSON.stringify(args)], { detached: true, stdio: ['ignore', out, out], env: process.env });
  child.unref();
}
