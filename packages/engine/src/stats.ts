// What a push reports: events while it runs, and each node's statistics at its end.

import type { RelayReport } from '@skysync/protocol';

export type PushEvent =
  | { type: 'scanned'; files: number; changes: number }
  /**
   * While data moves (at most every {@link PROGRESS_INTERVAL_MS} and once at the end): `bytesLiteral` is what was
   * handed to the connection, `bytesPlanned` what the plan will send in all (while entries are still being made,
   * an upper bound: a file counts its size until its chunks are planned).
   */
  | { type: 'progress'; bytesLiteral: number; bytesPlanned: number; bytesWire: number; filesSent: number; filesTotal: number }
  /** A bucket mount on one node (at most every few hundred ms): objects and bytes the node fetched of those it
   * asked for so far (the totals grow while the bucket is still being listed, until `settled`). */
  | { type: 'bucket'; objectsDone: number; objectsTotal: number; bytesDone: number; bytesTotal: number; failed: number; settled: boolean }
  | { type: 'warning'; message: string }
  /** A node's agent waits (for another push to the same destination): a line for the user, once. */
  | { type: 'notice'; message: string }
  | { type: 'change'; status: string; path: string; kind: string };

/** How often byte progress is reported while data moves. */
export const PROGRESS_INTERVAL_MS = 100;

/** A pull's byte progress: literal bytes received of those asked for. */
export interface PullProgress {
  bytesDone: number;
  bytesTotal: number;
}

/** The statistics every sync reports (the `--json` object has at least these). */
export interface SyncSummary {
  filesScanned: number;
  filesChanged: number;
  filesDeleted: number;
  /** New chunk bytes before compression. */
  bytesLiteral: number;
  /** Bytes written to (push) or read from (pull) the transport. */
  bytesWire: number;
  chunksReused: number;
  durationMs: number;
  transport: string;
}

export interface PushStats extends SyncSummary {
  bytesTotal: number;
  chunksLiteral: number;
  scanMs: number;
  generation: string | null;
  drift: string[];
  kept: string[];
  /** `inSource`: the file could not be read here (the node keeps what it has); otherwise the node could not place it. */
  failed: Array<{ path: string; error: string; inSource?: true }>;
  warnings: string[];
  dryRun: boolean;
  /** `watch`: only the directories the watch service named were listed; `full`: every directory was. */
  scan: 'watch' | 'full';
  /** Directories the scan listed. */
  scanDirs: number;
  /** Why the scan was full although watching is on. */
  scanReason?: string;
  changes?: Array<{ status: string; path: string; kind: string }>;
  /** Literal bytes this node took from the head's relay instead of from the client. */
  bytesRelay: number;
  /** A relayed push: the head served the other nodes; a worker says what the relay delivered (`error`: why it
   * stopped short, the rest then came from the client). */
  relay?: { role: 'head'; addresses: string[] } | ({ role: 'worker' } & RelayReport);
  /** Channels that carried chunk data (more than 1: lanes were opened, see docs/PROTOCOL.md). */
  lanes?: number;
}
