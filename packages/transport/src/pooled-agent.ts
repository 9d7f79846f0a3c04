// An agent the background process keeps (control-main.ts): what it said first, so a later command can be given
// it without a new greeting, and where its output goes while a command uses it.

import type net from 'node:net';
import { MAGIC } from '@skysync/protocol';
import { CtlFrame, encodeCtl } from './control.js';
import type { AgentChannel } from './target.js';

/** Where the greeting (MAGIC, then one frame: the hello) that starts at `from` ends; -1 while incomplete. */
export function greetingEnd(buf: Buffer, from: number): number {
  const head = from + MAGIC.length;
  if (buf.length < head + 4) return -1;
  const end = head + 4 + buf.readUInt32LE(head);
  return buf.length >= end ? end : -1;
}

/** Most of a greeting that is looked for before giving up on reusing that agent (a login banner precedes it). */
const GREETING_LIMIT = 1 << 20;

/** An agent this process started; one command at a time uses it, and it outlives the command when released. */
export class PooledAgent {
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
