import os from 'node:os';
import path from 'node:path';
import type { Chunker, NativeAddon } from '@skysync/chunking';

export interface AgentContext {
  home: string;
  chunker: Chunker;
  native: NativeAddon | null;
  log: (msg: string) => void;
  /** The chunk server the current push opened for the other nodes (closed when the client moves on). */
  relay?: { close(): Promise<void> } | null;
  /** The lane socket, opened at the first push that asks for lanes. */
  lanes?: Promise<import('./lanes.js').LaneServer>;
}

/** `~` and `~/x` are the agent's home; other relative paths are relative to it too; absolute stays. */
export function resolveRemotePath(home: string, p: string): string {
  if (p === '~') return home;
  if (p.startsWith('~/')) return path.join(home, p.slice(2));
  if (path.isAbsolute(p)) return path.normalize(p);
  return path.join(home, p);
}

export function defaultHome(): string {
  return process.env.HOME || os.homedir();
}
