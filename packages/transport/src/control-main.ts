// The background process behind a warm connection (see control.ts). Started detached by the CLI; holds one SSH
// connection and serves channels over a Unix socket until it is idle for too long, the connection drops, or it
// is told to stop.

import fs from 'node:fs';
import net from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { FrameDecoder, MAGIC } from '@skysync/protocol';
import { CtlFrame, encodeCtl, ensureControlDir, type DaemonArgs } from './control.js';
import { listenPrivate } from '@skysync/service';
import { LocalTarget } from './local.js';
import { SshTarget } from './ssh.js';
import type { AgentChannel, RemoteProcess } from './target.js';

const args = JSON.parse(process.argv[2] ?? '{}') as DaemonArgs;
let sink: string[] | null = null;
const target = args.local
  ? new LocalTarget(args.spec, args.local.home, { control: false })
  : new SshTarget(args.spec, { ...args.options, control: false, log: (m) => sink?.push(m) });
target.retain();
let active = 0;

/** Where the greeting (MAGIC, then one frame: the hello) that starts at `from` ends; -1 while incomplete. */
function greetingEnd(buf: Buffer, from: number): number {
  const head = from + MAGIC.length;
  if (buf.length < head + 4) return -1;
  const end = head + 4 + buf.readUInt32LE(head);
  return buf.length >= end ? end : -1;
}

/** Most of a greeting that is looked for before giving up on reusing that agent (a login banner precedes it). */
const GREETING_LIMIT = 1 << 20;

/** An agent this process started; one command at a time uses it, and it outlives the command when released. */
class PooledAgent {
  /** The agent's MAGIC and hello, replayed to every client after the first. */
  greeting: Buffer | null = null;
  /** The first client's MAGIC and hello: a later client must send exactly these to be given this agent. */
  clientGreeting: Buffer | null = null;
  exited = false;
  /** Told when the agent ends, while a command uses it. */
  onExit: ((code: number | null) => void) | null = null;
  private seen: Buffer | null = Buffer.alloc(0);
  private sink: ((d: Buffer) => void) | null = null;
  private held: Buffer[] = [];
  private stderrMark = 0;

  constructor(readonly ch: AgentChannel) {
    // Writing to an agent that died is noticed by its exit, not by a crash of this process.
    ch.output.on('error', () => {});
    ch.input.on('data', (d: Buffer) => {
      if (this.seen) this.learn(d);
      if (this.sink) this.sink(d);
      else this.held.push(d);
    });
    // Its last output is passed on before its exit is.
    const drained = new Promise<void>((resolve) => {
      ch.input.once('end', resolve);
      ch.input.once('close', resolve);
      ch.input.once('error', () => resolve());
    });
    void Promise.all([ch.exited, drained]).then(([code]) => {
      this.exited = true;
      this.onExit?.(code);
      this.onExit = null;
    });
  }

  private learn(d: Buffer): void {
    const seen = Buffer.concat([this.seen!, d]);
    const at = seen.indexOf(MAGIC);
    const end = at < 0 ? -1 : greetingEnd(seen, at);
    if (end >= 0) {
      this.greeting = Buffer.from(seen.subarray(at, end));
      this.seen = null;
    } else this.seen = seen.length > GREETING_LIMIT ? null : seen;
  }

  get reusable(): boolean {
    return !this.exited && this.greeting !== null && this.clientGreeting !== null;
  }

  /** Sends the agent's output to `sock` from now on (what it wrote meanwhile first), pausing it while full. */
  attach(sock: net.Socket): void {
    this.stderrMark = this.ch.stderr().length;
    this.sink = (d) => {
      if (!sock.write(encodeCtl(CtlFrame.Stdout, d))) {
        this.ch.input.pause();
        sock.once('drain', () => this.ch.input.resume());
      }
    };
    for (const d of this.held.splice(0)) this.sink(d);
  }

  detach(): void {
    this.sink = null;
    this.onExit = null;
    this.ch.input.resume();
  }

  /** What the agent wrote on stderr since it was attached. */
  newStderr(): string {
    return this.ch.stderr().slice(this.stderrMark);
  }

  close(): void {
    this.detach();
    void this.ch.close().catch(() => {});
  }
}

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

function handle(sock: net.Socket): void {
  touch(+1);
  sock.write(MAGIC);
  const decoder = new FrameDecoder();
  let stdin: Writable | null = null;
  let pending: Array<{ type: number; payload: Buffer }> = [];
  let opened = false;
  let closed = false;
  /** Set for an agent channel: what to do with the client's bytes, its end, and its release. */
  let agentIo: { write(d: Buffer): void; end(): void; release(): void } | null = null;
  const finish = (): void => {
    if (closed) return;
    closed = true;
    touch(-1);
  };
  sock.on('close', () => {
    // The client went away: end the channel's stdin so the agent aborts and a job is hung up.
    if (agentIo) agentIo.end();
    else stdin?.end();
    finish();
  });
  sock.on('error', () => {});
  const feed = (f: { type: number; payload: Buffer }): void => {
    if (agentIo) {
      if (f.type === CtlFrame.Stdin) agentIo.write(f.payload);
      else if (f.type === CtlFrame.StdinEnd) agentIo.end();
      else if (f.type === CtlFrame.Release) agentIo.release();
      return;
    }
    if (!stdin) {
      pending.push(f);
      return;
    }
    if (f.type === CtlFrame.Stdin) writeOrPause(stdin, f.payload, sock);
    else if (f.type === CtlFrame.StdinEnd || f.type === CtlFrame.Release) stdin.end();
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
        void open(JSON.parse(f.payload.toString('utf8')) as { kind: string; command?: string; path?: string });
      } else feed(f);
    }
  });

  /**
   * Serves one command's agent channel. The client's first bytes are its greeting: a reused agent already had
   * one, so it is compared (a different one gets a fresh agent) and answered with the agent's greeting from
   * memory. A release hands the agent back, between operations, for the next command.
   */
  const serveAgent = async (): Promise<void> => {
    let { agent, reused } = await takeAgent();
    sock.write(encodeCtl(CtlFrame.Opened, JSON.stringify({ logs: sink })));
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
        sock.end(encodeCtl(CtlFrame.Failed, JSON.stringify({ name: err.name, message: err.message })));
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
      if (greetingIn) {
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
        return;
      }
      toAgent(d);
    };
    // The agent ended while this command used it: say so, and have another one ready for the next command.
    const watchExit = (): void => {
      const watched = agent;
      watched.onExit = (code) => {
        const said = watched.newStderr();
        if (said) sock.write(encodeCtl(CtlFrame.Stderr, said));
        sock.end(encodeCtl(CtlFrame.Exit, JSON.stringify({ code })));
        // What the client still sends is for a dead agent: read and drop it, so its writes never wait on us.
        ended = true;
        sock.resume();
        prepareSpare();
      };
      if (watched.exited) watched.onExit(null);
    };
    agentIo = {
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
          sock.end(encodeCtl(CtlFrame.Exit, JSON.stringify({ code: null })));
        })();
      },
    };
    // A fresh agent's output (its greeting first) goes to the client at once; a reused one's after the check.
    if (!reused) agent.attach(sock);
    watchExit();
    for (const f of pending) feed(f);
    pending = [];
  };

  const open = async (req: { kind: string; command?: string; path?: string }): Promise<void> => {
    if (req.kind === 'shutdown') {
      sock.end(encodeCtl(CtlFrame.Opened, JSON.stringify({ logs: [] })));
      shutdown('asked');
      return;
    }
    sink = [];
    try {
      if (req.kind === 'agent') {
        await serveAgent();
        return;
      } else if (req.kind === 'socket' && typeof req.path === 'string' && target instanceof SshTarget) {
        const remote = await target.openSocket(req.path);
        sock.write(encodeCtl(CtlFrame.Opened, JSON.stringify({ logs: sink })));
        stdin = remote.output;
        for (const f of pending.splice(0)) feed(f);
        await forward(remote.input, sock, CtlFrame.Stdout);
        remote.close();
        sock.end(encodeCtl(CtlFrame.Exit, JSON.stringify({ code: null })));
      } else if (req.kind === 'exec' && typeof req.command === 'string') {
        const proc = await execCommand(req.command);
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

async function main(): Promise<void> {
  ensureControlDir();
  const listening = await listenPrivate(args.socket, handle);
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
