// The background process behind a warm connection (see control.ts). Started detached by the CLI; holds one SSH
// connection and serves channels over a Unix socket until it is idle for too long, the connection drops, or it
// is told to stop.

import fs from 'node:fs';
import type net from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { FrameDecoder, type FrameMessage, MAGIC } from '@skysync/protocol';
import { CtlFrame, encodeCtl, ensureControlDir, type DaemonArgs } from './control.js';
import { listenPrivate } from '@skysync/service';
import { LocalTarget } from './local.js';
import { SshTarget } from './ssh.js';
import { PooledAgent, greetingEnd } from './pooled-agent.js';
import type { RemoteProcess } from './target.js';

const args = JSON.parse(process.argv[2] ?? '{}') as DaemonArgs;
let sink: string[] | null = null;
const target = args.local
  ? new LocalTarget(args.spec, args.local.home, { control: false, idleDeadline: false })
  : new SshTarget(args.spec, { ...args.options, control: false, idleDeadline: false, log: (m) => sink?.push(m) });
target.retain();
let active = 0;

/**
 * An agent started ahead of need: the next command gets one that has already started node, loaded the bundle
 * and the addon, and said hello, instead of paying for that (and the exec round trip) before its first frame.
 */
let spare: Promise<PooledAgent> | null = null;
/** An agent a command handed back, waiting between operations for the next command. */
let idleAgent: PooledAgent | null = null;

function prepareSpare(): void {
  if (closing || spare || idleAgent) return;
  const p = target.openAgent().then((ch) => new PooledAgent(ch));
  p.catch(() => {});
  spare = p;
}

async function takeAgent(): Promise<{ agent: PooledAgent; reused: boolean }> {
  const idle = idleAgent;
  idleAgent = null;
  if (idle?.reusable) return { agent: idle, reused: true };
  idle?.close();
  const ready = spare;
  spare = null;
  const fresh = ready ? await ready.catch(() => null) : null;
  if (fresh && !fresh.exited) return { agent: fresh, reused: false };
  return { agent: new PooledAgent(await target.openAgent()), reused: false };
}

/** A released agent waits for the next command; one is enough. */
function keep(agent: PooledAgent): void {
  agent.detach();
  if (closing || idleAgent || !agent.reusable) {
    agent.close();
    prepareSpare();
    return;
  }
  idleAgent = agent;
  agent.onExit = () => {
    if (idleAgent === agent) idleAgent = null;
  };
}

/**
 * A shell started ahead of need, waiting on its stdin for a command: a line with the command's length in bytes,
 * then the command. `dd bs=1` takes exactly those bytes (and `read` exactly one line), so whatever follows (a
 * job script) is the command's stdin. A command then costs no channel open, no exec request and no new session
 * on the remote: the round trips and the sshd fork happened while nothing waited.
 */
const RUNNER = `sh -c 'IFS= read -r n || exit 125; c=$(dd bs=1 count="$n" 2>/dev/null); eval "$c"'`;
let spareRunner: Promise<{ proc: RemoteProcess; exited: () => boolean }> | null = null;

function prepareRunner(): void {
  if (closing || spareRunner) return;
  const p = target.exec(RUNNER).then((proc) => {
    let done = false;
    void proc.exited.then(() => (done = true));
    return { proc, exited: () => done };
  });
  p.catch(() => {});
  spareRunner = p;
}

async function execCommand(command: string): Promise<RemoteProcess> {
  const ready = spareRunner;
  spareRunner = null;
  const runner = ready ? await ready.catch(() => null) : null;
  prepareRunner();
  if (runner && !runner.exited()) {
    runner.proc.stdin.write(`${Buffer.byteLength(command)}\n${command}`);
    return runner.proc;
  }
  return target.exec(command);
}

let closing = false;
let idle: NodeJS.Timeout | null = null;
let server: net.Server | null = null;

function shutdown(why = 'stop'): void {
  closing = true;
  void spare?.then((a) => a.close()).catch(() => {});
  void spareRunner?.then((r) => r.proc.stdin.end()).catch(() => {});
  idleAgent?.close();
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

/**
 * Writes to `to`; while it is full, stops reading `from` until it drains or closes (an agent that died never
 * drains: reading on after its close lets the channel's end get through instead of waiting forever).
 */
function writeOrPause(to: Writable, d: Buffer, from: net.Socket): void {
  if (to.destroyed || to.writableEnded) return;
  if (to.write(d)) return;
  from.pause();
  const go = (): void => {
    to.off('drain', go);
    to.off('close', go);
    from.resume();
  };
  to.once('drain', go);
  to.once('close', go);
}

type CtlMessage = { type: number; payload: Buffer };

/** One client connection: one channel (an agent, a command, a remote socket) or a request to stop. */
class ChannelServer {
  private readonly decoder = new FrameDecoder();
  /** Frames that came before the channel was ready for them. */
  private pending: CtlMessage[] = [];
  private opened = false;
  private closed = false;
  /** A command's or remote socket's input. */
  private stdin: Writable | null = null;
  /** Set for an agent channel: what to do with the client's bytes, its end, and its release. */
  private agentIo: { write(d: Buffer): void; end(): void; release(): void } | null = null;

  constructor(private readonly sock: net.Socket) {
    touch(+1);
    sock.write(MAGIC);
    sock.on('close', () => {
      // The client went away: end the channel's stdin so the agent aborts and a job is hung up.
      if (this.agentIo) this.agentIo.end();
      else this.stdin?.end();
      if (!this.closed) {
        this.closed = true;
        touch(-1);
      }
    });
    sock.on('error', () => {});
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  private onData(chunk: Buffer): void {
    let frames: FrameMessage[];
    try {
      frames = this.decoder.push(chunk);
    } catch {
      this.sock.destroy();
      return;
    }
    for (const f of frames) {
      if (this.opened) {
        this.feed(f);
        continue;
      }
      this.opened = true;
      if (f.type !== CtlFrame.Open) return void this.sock.destroy();
      void this.open(JSON.parse(f.payload.toString('utf8')) as { kind: string; command?: string; path?: string });
    }
  }

  private feed(f: CtlMessage): void {
    if (this.agentIo) {
      if (f.type === CtlFrame.Stdin) this.agentIo.write(f.payload);
      else if (f.type === CtlFrame.StdinEnd) this.agentIo.end();
      else if (f.type === CtlFrame.Release) this.agentIo.release();
      return;
    }
    if (!this.stdin) {
      this.pending.push(f);
      return;
    }
    if (f.type === CtlFrame.Stdin) writeOrPause(this.stdin, f.payload, this.sock);
    else if (f.type === CtlFrame.StdinEnd || f.type === CtlFrame.Release) this.stdin.end();
  }

  private feedPending(): void {
    for (const f of this.pending.splice(0)) this.feed(f);
  }

  private say(type: CtlFrame, value: unknown, last = false): void {
    const frame = encodeCtl(type, JSON.stringify(value));
    if (last) this.sock.end(frame);
    else this.sock.write(frame);
  }

  private async open(req: { kind: string; command?: string; path?: string }): Promise<void> {
    if (req.kind === 'shutdown') {
      this.say(CtlFrame.Opened, { logs: [] }, true);
      shutdown('asked');
      return;
    }
    sink = [];
    try {
      if (req.kind === 'agent') await this.serveAgent();
      else if (req.kind === 'socket' && typeof req.path === 'string' && target instanceof SshTarget) await this.serveSocket(target, req.path);
      else if (req.kind === 'exec' && typeof req.command === 'string') await this.serveExec(req.command);
      else this.say(CtlFrame.Failed, { name: 'Error', message: `unknown request ${req.kind}` }, true);
    } catch (e) {
      const err = e as Error;
      this.say(CtlFrame.Failed, { name: err.name, message: err.message }, true);
    } finally {
      sink = null;
    }
    this.feedPending();
  }

  private async serveSocket(ssh: SshTarget, remotePath: string): Promise<void> {
    const remote = await ssh.openSocket(remotePath);
    this.say(CtlFrame.Opened, { logs: sink });
    this.stdin = remote.output;
    this.feedPending();
    await forward(remote.input, this.sock, CtlFrame.Stdout);
    remote.close();
    this.say(CtlFrame.Exit, { code: null }, true);
  }

  private async serveExec(command: string): Promise<void> {
    const proc = await execCommand(command);
    this.say(CtlFrame.Opened, { logs: sink });
    this.stdin = proc.stdin;
    const streams = Promise.all([forward(proc.stdout, this.sock, CtlFrame.Stdout), forward(proc.stderr, this.sock, CtlFrame.Stderr)]);
    const code = await proc.exited;
    await Promise.race([streams, new Promise((r) => setTimeout(r, 200))]);
    this.say(CtlFrame.Exit, { code }, true);
  }

  /**
   * Serves one command's agent channel. The client's first bytes are its greeting: a reused agent already had
   * one, so it is compared (a different one gets a fresh agent) and answered with the agent's greeting from
   * memory. A release hands the agent back, between operations, for the next command.
   */
  private async serveAgent(): Promise<void> {
    const sock = this.sock;
    let { agent, reused } = await takeAgent();
    this.say(CtlFrame.Opened, { logs: sink });
    let greetingIn: Buffer | null = Buffer.alloc(0);
    let released = false;
    let ended = false;
    const toAgent = (d: Buffer): void => writeOrPause(agent.ch.output, d, sock);
    const queued: Buffer[] = [];
    let switching: Promise<void> | null = null;
    const startFresh = async (first: Buffer): Promise<void> => {
      agent.close();
      try {
        agent = new PooledAgent(await target.openAgent());
      } catch (e) {
        const err = e as Error;
        this.say(CtlFrame.Failed, { name: err.name, message: err.message }, true);
        return;
      }
      reused = false;
      agent.clientGreeting = first;
      agent.attach(sock);
      watchExit();
      toAgent(first);
      for (const d of queued.splice(0)) toAgent(d);
      if (ended) agent.ch.output.end();
    };
    const write = (d: Buffer): void => {
      if (ended) return;
      if (switching) return void queued.push(d);
      if (!greetingIn) return toAgent(d);
      greetingIn = Buffer.concat([greetingIn, d]);
      const end = greetingEnd(greetingIn, 0);
      if (end < 0) return;
      const greeting = greetingIn.subarray(0, end);
      const rest = greetingIn.subarray(end);
      greetingIn = null;
      if (!reused) {
        agent.clientGreeting = Buffer.from(greeting);
        toAgent(Buffer.concat([greeting, rest]));
      } else if (agent.clientGreeting!.equals(greeting)) {
        sock.write(encodeCtl(CtlFrame.Stdout, agent.greeting!));
        agent.attach(sock);
        if (rest.length) toAgent(rest);
      } else {
        queued.push(rest);
        switching = startFresh(Buffer.from(greeting)).finally(() => (switching = null));
      }
    };
    // The agent ended while this command used it: say so, and have another one ready for the next command.
    const watchExit = (): void => {
      const watched = agent;
      watched.onExit = (code) => {
        const said = watched.newStderr();
        if (said) sock.write(encodeCtl(CtlFrame.Stderr, said));
        this.say(CtlFrame.Exit, { code }, true);
        // What the client still sends is for a dead agent: read and drop it, so its writes never wait on us.
        ended = true;
        sock.resume();
        prepareSpare();
      };
      if (watched.exited) watched.onExit(null);
    };
    this.agentIo = {
      write,
      end: () => {
        if (released || ended) return;
        ended = true;
        if (!switching) agent.ch.output.end();
      },
      release: () => {
        if (released || ended) return;
        released = true;
        void (async () => {
          await switching;
          keep(agent);
          this.say(CtlFrame.Exit, { code: null }, true);
        })();
      },
    };
    // A fresh agent's output (its greeting first) goes to the client at once; a reused one's after the check.
    if (!reused) agent.attach(sock);
    watchExit();
    this.feedPending();
  }
}

let socketIno = -1;

async function main(): Promise<void> {
  ensureControlDir();
  const listening = await listenPrivate(args.socket, (sock) => new ChannelServer(sock));
  if (!listening) {
    if (process.env.SKYSYNC_DEBUG) process.stderr.write(`${new Date().toISOString()} ${args.spec}: another one listens\n`);
    process.exit(0);
  }
  ({ server, ino: socketIno } = listening);
  try {
    await target.warm();
  } catch {
    shutdown();
    return;
  }
  if (process.env.SKYSYNC_DEBUG) process.stderr.write(`${new Date().toISOString()} ${args.spec}: connected\n`);
  target.onDisconnect(() => shutdown('disconnected'));
  prepareSpare();
  // Local commands run without a shell in between: no runner to keep.
  if (!args.local) prepareRunner();
  touch(0);
}

void main();
