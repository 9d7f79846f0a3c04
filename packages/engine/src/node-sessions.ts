// The one owner of a command's agent sessions, one per node: it opens them, and at the end it releases those
// whose operations all completed (a warm connection may keep the agent) and closes the rest.

import type { Compression, PushBegin } from '@skysync/protocol';
import type { Target } from '@skysync/transport';
import { openSession, type Session } from './session.js';
import { deferred, type Deferred } from './util.js';

/** The compression a node is offered: none for a local agent (no link to save), else the best the agent has. */
export function defaultCompression(target: Target): Compression[] {
  return target.kind === 'local' ? ['none'] : ['zstd', 'deflate', 'none'];
}

export interface SessionsOptions {
  /** Compression preferences, best first (default: `defaultCompression`). */
  compression?: Compression[];
  /** A node whose session could not be opened (or whose agent did not answer); its operations fail. */
  onOpenError?: (node: number, e: Error) => void;
}

/** One node's session as it is being opened, shared by every view of the same nodes (`subset`). */
export interface Slot {
  target: Target;
  opened: Deferred<Session | null>;
  started: boolean;
  error: Error | null;
}

export class NodeSessions {
  readonly targets: Target[];
  private readonly slots: Slot[];

  constructor(targets: Target[], opts?: SessionsOptions);
  constructor(targets: Target[], opts: SessionsOptions, slots: Slot[]);
  constructor(
    targets: Target[],
    private readonly opts: SessionsOptions = {},
    slots?: Slot[],
  ) {
    this.targets = targets;
    this.slots = slots ?? targets.map((target) => ({ target, opened: deferred<Session | null>(), started: false, error: null }));
  }

  /** The same sessions, seen as the nodes `nodes` (by index here) only: node k there is `nodes[k]` here. */
  subset(nodes: number[]): NodeSessions {
    const slots = nodes.map((i) => this.slots[i]!);
    const opts: SessionsOptions = { ...this.opts, onOpenError: this.opts.onOpenError && ((k, e) => this.opts.onOpenError!(nodes[k]!, e)) };
    return new NodeSessions(
      slots.map((s) => s.target),
      opts,
      slots,
    );
  }

  compressionFor(node: number): Compression[] {
    return this.opts.compression ?? defaultCompression(this.targets[node]!);
  }

  /**
   * Node `node`'s session. The first call opens it, with `begin` (when given) in its first bytes, so the agent
   * finds its first operation waiting (`carriesBegin`); later calls share the session and send their own.
   */
  acquire(node: number, begin?: PushBegin): { session: Promise<Session>; carriesBegin: boolean } {
    const slot = this.slots[node]!;
    const carriesBegin = !slot.started;
    if (carriesBegin) {
      slot.started = true;
      slot.opened.resolve(this.open(node, begin));
    }
    const session = slot.opened.promise.then((s) => s ?? Promise.reject(slot.error ?? new Error(`no session with ${slot.target.spec}`)));
    session.catch(() => {});
    return { session, carriesBegin };
  }

  /** Opens every node's session now (nothing to send with it). */
  openAll(): void {
    this.targets.forEach((_, i) => this.acquire(i));
  }

  /** Node `node`'s session once its opening settled: null if it failed, or was never started (and never will be). */
  settled(node: number): Promise<Session | null> {
    return this.slots[node]!.opened.promise;
  }

  /** Every opening settled: a session or null, by node. */
  all(): Promise<Array<Session | null>> {
    return Promise.all(this.slots.map((s) => s.opened.promise));
  }

  /** Nodes not opened by now never will be. */
  stopOpening(): void {
    for (const s of this.slots) {
      s.started = true;
      s.opened.resolve(null);
    }
  }

  /**
   * Ends every session: `completed(node)` says whether all of that node's operations ran to their end. Those keep
   * their agent when the transport can (`release`); the others are closed.
   */
  async finish(completed: (node: number) => boolean): Promise<void> {
    this.stopOpening();
    const sessions = await this.all();
    await Promise.all(sessions.map((s, i) => (s ? (completed(i) ? s.release() : s.close()).catch(() => {}) : undefined)));
  }

  private async open(node: number, begin: PushBegin | undefined): Promise<Session | null> {
    const target = this.targets[node]!;
    let s: Session | null = null;
    try {
      s = await openSession(target, this.compressionFor(node), begin);
      await s.agentHello;
      return s;
    } catch (e) {
      void s?.close().catch(() => {});
      const err = e instanceof Error ? e : new Error(String(e));
      this.slots[node]!.error = err;
      this.opts.onOpenError?.(node, err);
      return null;
    }
  }
}
