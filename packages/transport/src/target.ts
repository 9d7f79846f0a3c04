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
}

export interface Target {
  kind: 'local' | 'ssh';
  /** How the user wrote it, for messages. */
  spec: string;
  /** A stable identity for client-side state. */
  key: string;
  openAgent(): Promise<AgentChannel>;
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
