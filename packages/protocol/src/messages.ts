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
  /**
   * Optional features, by name. `relay`: as an agent, it serves chunks to other nodes (`PushBegin.relay`) and
   * fetches them from one (`Plan.relay`). `lanes`: it accepts chunk data over extra channels (`PushBegin.lanes`).
   * Absent in older peers, which are then simply not asked.
   */
  capabilities?: string[];
}

/** Where a worker finds the head's chunk server, and the one-time token that opens it. */
export interface RelayOffer {
  /** Candidate addresses, best first (IPv6 without brackets). */
  addresses: string[];
  port: number;
  /** 32 random bytes, hex: a session's proof that the client vouched for it. */
  token: string;
}

/** What a worker got from the relay during a push. */
export interface RelayReport {
  /** Chunks and literal bytes taken from the relay; the rest came from the client. */
  chunks: number;
  bytes: number;
  /** The address that answered, if any did. */
  address: string | null;
  /** Why the relay stopped short (could not connect, connection lost, a chunk it could not serve or that failed
   * verification); null when it delivered every chunk asked for. */
  error: string | null;
  ms: number;
}

/** First frame on a relay connection, both ways: the token from the worker, the chosen compression back. */
export interface RelayHello {
  token?: string;
  compression: Compression[];
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
  /** Open a chunk server for the other nodes of this push (only sent to agents with the `relay` capability). */
  relay?: boolean;
  /** The client may send chunk data over extra channels: offer a lane socket (agents with `lanes` only). */
  lanes?: boolean;
}

/**
 * Where the client opens lanes for this push: a Unix socket on the remote, reached through the SSH connection
 * (OpenSSH's direct-streamlocal), and the one-time token that admits a lane.
 */
export interface LaneOffer {
  socket: string;
  /** 32 random bytes, hex. */
  token: string;
}

/** First frame on a lane: the token and the lane's number (1, 2, ...) from the client; `{}` back once admitted. */
export interface LaneHello {
  token?: string;
  lane?: number;
}

/**
 * The `lanes` frame. From the sender of the data: blocks from here on go round-robin over the main connection (0)
 * and these lanes. From a client that pulls: these lanes are open and admitted, the agent may use them.
 */
export interface LanesSwitch {
  lanes: number[];
}

export interface PullBegin {
  op: 'pull';
  path: string;
  chunkParams: ChunkParams;
  /** As `PushBegin.lanes`: the client may open lanes for the data the agent sends. */
  lanes?: boolean;
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
  /** The chunk server opened for `PushBegin.relay`, or why there is none. */
  relay?: RelayOffer | { error: string };
  /** The lane socket asked for with `PushBegin.lanes`, or why there is none. */
  lanes?: LaneOffer | { error: string };
}

export interface PullState {
  kind: 'file' | 'dir' | 'symlink' | 'missing';
  path: string;
  /** The lane socket asked for with `PullBegin.lanes`, or why there is none. */
  lanes?: LaneOffer | { error: string };
}

export interface Plan {
  /** 'data': chunk bytes follow without asking; 'need': the receiver first answers which chunks it lacks. */
  mode: 'data' | 'need';
  compression: Compression;
  deleteMode: DeleteMode;
  dryRun: boolean;
  /** Pull only: the remote item is a single file. */
  single?: boolean;
  /**
   * Push in need mode only: fetch the needed chunks from this chunk server first, in need order, and ask the
   * client (the `need` frame) only for those it did not deliver.
   */
  relay?: RelayOffer;
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
  /** Present when the plan named a relay. */
  relay?: RelayReport;
}

export interface ErrorMessage {
  message: string;
  code: string;
}
