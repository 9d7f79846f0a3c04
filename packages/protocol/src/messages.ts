// The JSON control messages. Bulk data (plan entries, chunk ids, chunk bytes) is binary: see entries.ts.

export type Compression = 'zstd' | 'deflate' | 'none';
export type DeleteMode = 'placed' | 'none' | 'mirror';

export interface ChunkParams {
  minSize: number;
  avgSize: number;
  maxSize: number;
}

export interface Hello {
  protocol: number;
  software: string;
  role: 'client' | 'agent';
  compression: Compression[];
  native: boolean;
  platform: string;
  node: string;
}

export interface PushBegin {
  op: 'push';
  /** As the user wrote it: `~/...` is the agent's home, otherwise absolute. */
  dest: string;
  /** The generation the client believes the destination is at, or null when it knows nothing. */
  base: string | null;
  chunkParams: ChunkParams;
  /** The destination is one file (a file mount): the plan carries exactly one entry, named as that file. */
  file?: boolean;
}

export interface PullBegin {
  op: 'pull';
  path: string;
  chunkParams: ChunkParams;
}

export type Begin = PushBegin | PullBegin;

export interface PushState {
  /** The destination's current generation (null: never pushed, or its manifest was lost). */
  generation: string | null;
  /** Files skysync placed that were changed on the remote since (latin1 paths). */
  drift: string[];
  /** Absolute destination path on the remote, for messages. */
  dest: string;
  /**
   * How many entries the agent has records of at this destination. 0: it can find nothing by id there, so the
   * client sends data straight away (data mode) instead of asking first.
   */
  held?: number;
}

export interface PullState {
  kind: 'file' | 'dir' | 'symlink' | 'missing';
  path: string;
}

export interface Plan {
  /** 'data': chunk bytes follow without asking; 'need': the receiver first answers which chunks it lacks. */
  mode: 'data' | 'need';
  compression: Compression;
  deleteMode: DeleteMode;
  dryRun: boolean;
  /** Pull only: the remote item is a single file. */
  single?: boolean;
}

export interface FileFailure {
  path: string;
  error: string;
}

export interface Done {
  generation: string | null;
  written: number;
  deleted: number;
  kept: string[];
  failed: FileFailure[];
}

export interface ErrorMessage {
  message: string;
  code: string;
}
