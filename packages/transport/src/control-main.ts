// The background process behind a warm connection (see control.ts). Started detached by the CLI; holds one SSH
// connection and serves channels over a Unix socket until it is idle for too long, the connection drops, or it
// is told to stop.

import fs from 'node:fs';
import net from 'node:net';
import type { Readable } from 'node:stream';
import { CtlDecoder, CtlFrame, encodeCtl, ensureControlDir, type DaemonArgs } from './control.js';
import { SshTarget } from './ssh.js';
import type { AgentChannel } from './target.js';

const args = JSON.parse(process.argv[2] ?? '{}') as DaemonArgs;
let sink: string[] | null = null;
const target = new SshTarget(args.spec, { ...args.options, control: false, log: (m) => sink?.push(m) });
target.retain();
let active = 0;
/**
 * An agent started ahead of need: the next command gets one that has already started node, loaded the bundle
 * and the addon, and said hello, instead of paying for that (and the exec round trip) before its first frame.
 */
let spare: Promise<AgentChannel> | null = null;

function prepareSpare(): void {
  if (closing) return;
  const p = target.openAgent();
  p.catch(() => {});
  spare = p;
}

async function takeAgent(): Promise<AgentChannel> {
  const ready = spare;
  spare = null;
  if (ready) {
    const ch = await ready.catch(() => null);
    const alive = ch && (await Promise.race([ch.exited.then(() => false), Promise.resolve(true)]));
    if (ch && alive) {
      prepareSpare();
      return ch;
    }
  }
  const ch = await target.openAgent();
  prepareSpare();
  return ch;
}
let closing = false;
let idle: NodeJS.Timeout | null = null;
let server: net.Server | null = null;

function shutdown(why = 'stop'): void {
  closing = true;
  void spare?.then((ch) => ch.close()).catch(() => {});
  if (process.env.SKYSYNC_DEBUG) process.stderr.write(`${new Date().toISOString()} ${args.spec}: shutting down: ${why}\n`);
  if (server) {
    server.close();
    // Only remove the socket if it is still ours (a newer daemon may have replaced a stale one).
    try {
      if (fs.statSync(args.socket).ino === socketIno) fs.rmSync(args.socket, { force: true });
    } catch {
      // Already gone.
    }
  }
  void target.close().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 3000).unref();
}

function touch(delta: number): void {
  active += delta;
  if (idle) clearTimeout(idle);
  idle = null;
  if (active === 0) idle = setTimeout(() => shutdown('idle'), Math.max(1, args.idleSeconds) * 1000);
}

/** Copies a stream into frames of `type`, pausing it while the socket is full. */
function forward(from: Readable, sock: net.Socket, type: CtlFrame): Promise<void> {
  return new Promise((resolve) => {
    from.on('data', (d: Buffer) => {
      if (!sock.write(encodeCtl(type, d))) {
        from.pause();
        sock.once('drain', () => from.resume());
      }
    });
    from.once('end', resolve);
    from.once('close', resolve);
    from.once('error', () => resolve());
  });
}

function handle(sock: net.Socket): void {
  touch(+1);
  const decoder = new CtlDecoder();
  let stdin: NodeJS.WritableStream | null = null;
  let pending: Array<{ type: number; payload: Buffer }> = [];
  let opened = false;
  let closed = false;
  const finish = (): void => {
    if (closed) return;
    closed = true;
    touch(-1);
  };
  sock.on('close', () => {
    // The client went away: end the channel's stdin so the agent aborts and a job is hung up.
    stdin?.end();
    finish();
  });
  sock.on('error', () => {});
  const feed = (f: { type: number; payload: Buffer }): void => {
    if (!stdin) {
      pending.push(f);
      return;
    }
    if (f.type === CtlFrame.Stdin) {
      if (!stdin.write(Buffer.from(f.payload))) {
        sock.pause();
        stdin.once('drain', () => sock.resume());
      }
    } else if (f.type === CtlFrame.StdinEnd) stdin.end();
  };
  sock.on('data', (chunk: Buffer) => {
    let frames;
    try {
      frames = decoder.push(chunk);
    } catch {
      sock.destroy();
      return;
    }
    for (const f of frames) {
      if (!opened) {
        opened = true;
        if (f.type !== CtlFrame.Open) return void sock.destroy();
        void open(JSON.parse(f.payload.toString('utf8')) as { kind: string; command?: string });
      } else feed(f);
    }
  });

  const open = async (req: { kind: string; command?: string }): Promise<void> => {
    if (req.kind === 'shutdown') {
      sock.end(encodeCtl(CtlFrame.Opened, JSON.stringify({ logs: [] })));
      shutdown('asked');
      return;
    }
    sink = [];
    try {
      if (req.kind === 'agent') {
        const ch = await takeAgent();
        sock.write(encodeCtl(CtlFrame.Opened, JSON.stringify({ logs: sink })));
        stdin = ch.output;
        const out = forward(ch.input, sock, CtlFrame.Stdout);
        const code = await ch.exited;
        await out;
        if (ch.stderr()) sock.write(encodeCtl(CtlFrame.Stderr, ch.stderr()));
        sock.end(encodeCtl(CtlFrame.Exit, JSON.stringify({ code })));
      } else if (req.kind === 'exec' && typeof req.command === 'string') {
        const proc = await target.exec(req.command);
        sock.write(encodeCtl(CtlFrame.Opened, JSON.stringify({ logs: sink })));
        stdin = proc.stdin;
        const streams = Promise.all([forward(proc.stdout, sock, CtlFrame.Stdout), forward(proc.stderr, sock, CtlFrame.Stderr)]);
        const code = await proc.exited;
        await Promise.race([streams, new Promise((r) => setTimeout(r, 200))]);
        sock.end(encodeCtl(CtlFrame.Exit, JSON.stringify({ code })));
      } else {
        sock.end(encodeCtl(CtlFrame.Failed, JSON.stringify({ name: 'Error', message: `unknown request ${req.kind}` })));
      }
    } catch (e) {
      const err = e as Error;
      sock.end(encodeCtl(CtlFrame.Failed, JSON.stringify({ name: err.name, message: err.message })));
    } finally {
      sink = null;
    }
    for (const f of pending) feed(f);
    pending = [];
  };
}

let socketIno = -1;

async function listen(): Promise<boolean> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const s = net.createServer(handle);
    const ok = await new Promise<boolean>((resolve) => {
      s.once('error', () => resolve(false));
      s.listen(args.socket, () => resolve(true));
    });
    if (ok) {
      fs.chmodSync(args.socket, 0o600);
      socketIno = fs.statSync(args.socket).ino;
      server = s;
      return true;
    }
    // Someone holds the path: a live daemon (then leave), or a leftover (then take it over).
    const live = await new Promise<boolean>((resolve) => {
      const c = net.createConnection(args.socket);
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (live) return false;
    fs.rmSync(args.socket, { force: true });
  }
  return false;
}

async function main(): Promise<void> {
  ensureControlDir();
  if (!(await listen())) {
    if (process.env.SKYSYNC_DEBUG) process.stderr.write(`${new Date().toISOString()} ${args.spec}: another one listens\n`);
    process.exit(0);
  }
  try {
    await target.warm();
  } catch {
    shutdown();
    return;
  }
  if (process.env.SKYSYNC_DEBUG) process.stderr.write(`${new Date().toISOString()} ${args.spec}: connected\n`);
  target.onDisconnect(() => shutdown('disconnected'));
  prepareSpare();
  touch(0);
}

void main();
