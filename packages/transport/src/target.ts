import type { Readable, Writable } from 'node:stream';

/** A running agent's byte streams. */
export interface AgentChannel {
  /** What the agent writes (its stdout). */
  input: Readable;
  /** What the agent reads (its stdin). */
  output: Writable;
  /** What the agent said on stderr so far (for error messages). */
  stderr(): string;
  /** Resolves with the agent's exit code once it has ended. */
  exited: Promise<number | null>;
  close(): Promise<void>;
  /**
   * Ends the agent's input without waiting for it to exit: for a session whose operations all completed (the
   * agent only records its state after that, and a later operation waits for its lock).
   */
  detach?(): void;
  /**
   * Hands the agent back instead of ending it, for a later command to reuse (warm connections only). Only
   * between operations, after the client said `end`.
   */
  release?(): Promise<void>;
}

/** A command running on the target (over the same connection as the agent, for SSH targets). */
export interface RemoteProcess {
  stdout: Readable;
  stderr: Readable;
  /** The command's stdin. */
  stdin: Writable;
  /** The exit code; null when the connection dropped or a signal ended it without one. */
  exited: Promise<number | null>;
}

/** A byte stream to a Unix socket on the target, carried by the target's SSH connection. */
export interface RemoteSocket {
  input: Readable;
  output: Writable;
  close(): void;
}

export interface Target {
  kind: 'local' | 'ssh';
  /** How the user wrote it, for messages. */
  spec: string;
  /** A stable identity for client-side state. */
  key: string;
  /**
   * Starts (or reuses) an agent. `prelude` is the client's first frames: written at once, before the agent has
   * even started where the transport allows it, so the agent finds them waiting instead of costing a round trip.
   */
  openAgent(prelude?: Buffer): Promise<AgentChannel>;
  /** Runs a shell command line on the target (as `ssh host CMD` does: the remote login shell parses it). */
  exec(command: string): Promise<RemoteProcess>;
  /**
   * The command line (for `exec`) that runs the installed agent with `args` (a subcommand such as `fuse flush`),
   * exiting 127 with one line on stderr when no agent is installed there.
   */
  agentCommand(args: string[]): string;
  /**
   * Connects to a Unix socket on the target through the connection (OpenSSH's direct-streamlocal): how the
   * client opens extra channels for bulk data. SSH targets only: a local pipe has no window to spread over.
   */
  openSocket?(socketPath: string): Promise<RemoteSocket>;
  /** Keeps the connection open between operations until `close()` (one connection for a whole command). */
  retain(): void;
  close(): Promise<void>;
}

export class TargetError extends Error {
  override name = 'TargetError';
}

/** Reaching or starting the agent failed (network, authentication, host key, remote environment). */
export class ConnectError extends Error {
  override name = 'ConnectError';
}

/** The agent cannot run on the remote (no node, or one too old): the caller may fall back to rsync. */
export class NoAgentError extends ConnectError {
  override name = 'NoAgentError';
}
