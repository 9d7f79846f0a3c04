// The JSON control messages, each declared once as a schema (schema.ts): the type below is inferred from it and
// every decode site checks a peer's message against it. Bulk data (plan entries, chunk ids, chunk bytes) is
// binary: see entries.ts.

import { array, boolean, count, either, integer, knownNames, literal, message, nullable, number, object, optional, record, string, variants, type Infer } from './schema.js';

const compression = literal('zstd', 'deflate', 'none');
export type Compression = Infer<typeof compression>;
/** A peer's list of compressions: names this side does not know are dropped, not refused. */
const compressionOffer = knownNames('zstd', 'deflate', 'none');
const deleteMode = literal('placed', 'none', 'mirror');
export type DeleteMode = Infer<typeof deleteMode>;

const chunkParams = object({ minSize: count(), avgSize: count(), maxSize: count() }, 'chunk parameters');
export type ChunkParams = Infer<typeof chunkParams>;

export const Hello = message(
  'hello',
  object({
    protocol: integer(),
    software: string(),
    role: literal('client', 'agent'),
    compression: compressionOffer,
    native: boolean(),
    platform: string(),
    node: string(),
    /**
     * Optional features, by name. `relay`: as an agent, it serves chunks to other nodes (`PushBegin.relay`) and
     * fetches them from one (`Plan.relay`). `lanes`: it accepts chunk data over extra channels (`PushBegin.lanes`).
     * Absent in older peers, which are then simply not asked.
     */
    capabilities: optional(array(string())),
  }),
);
export type Hello = Infer<typeof Hello>;

/** Where a worker finds the head's chunk server, and the one-time token that opens it. */
const relayOffer = object(
  {
    /** Candidate addresses, best first (IPv6 without brackets). */
    addresses: array(string()),
    port: count(),
    /** 32 random bytes, hex: a session's proof that the client vouched for it. */
    token: string(),
  },
  'a relay offer',
);
export type RelayOffer = Infer<typeof relayOffer>;

/** What a worker got from the relay during a push. */
const relayReport = object(
  {
    /** Chunks and literal bytes taken from the relay; the rest came from the client. */
    chunks: count(),
    bytes: count(),
    /** The address that answered, if any did. */
    address: nullable(string()),
    /** Why the relay stopped short (could not connect, connection lost, a chunk it could not serve or that failed
     * verification); null when it delivered every chunk asked for. */
    error: nullable(string()),
    ms: number(),
  },
  'a relay report',
);
export type RelayReport = Infer<typeof relayReport>;

/** First frame on a relay connection, both ways: the token from the worker, the chosen compression back. */
export const RelayHello = message('relay hello', object({ token: optional(string()), compression: compressionOffer }));
export type RelayHello = Infer<typeof RelayHello>;

/** Why the agent offers no relay or lanes. */
const refusal = object({ error: string() }, 'an error');

const pushBegin = object({
  op: literal('push'),
  /** As the user wrote it: `~/...` is the agent's home, otherwise absolute. */
  dest: string(),
  /** The generation the client believes the destination is at, or null when it knows nothing. */
  base: nullable(string()),
  chunkParams,
  /** The destination is one file (a file mount): the plan carries exactly one entry, named as that file. */
  file: optional(boolean()),
  /** Open a chunk server for the other nodes of this push (only sent to agents with the `relay` capability). */
  relay: optional(boolean()),
  /** The client may send chunk data over extra channels: offer a lane socket (agents with `lanes` only). */
  lanes: optional(boolean()),
  /** The client shows `notice` frames (a wait for another push's lock) before the state; older agents ignore it. */
  notices: optional(boolean()),
});
export type PushBegin = Infer<typeof pushBegin>;

/**
 * Where the client opens lanes for this push: a Unix socket on the remote, reached through the SSH connection
 * (OpenSSH's direct-streamlocal), and the one-time token that admits a lane.
 */
const laneOffer = object(
  {
    socket: string(),
    /** 32 random bytes, hex. */
    token: string(),
  },
  'a lane offer',
);
export type LaneOffer = Infer<typeof laneOffer>;

/** First frame on a lane: the token and the lane's number (1, 2, ...) from the client; `{}` back once admitted. */
export const LaneHello = message('lane hello', object({ token: optional(string()), lane: optional(count()) }));
export type LaneHello = Infer<typeof LaneHello>;

/**
 * The `lanes` frame. From the sender of the data: blocks from here on go round-robin over the main connection (0)
 * and these lanes. From a client that pulls: these lanes are open and admitted, the agent may use them.
 */
export const LanesSwitch = message('lanes', object({ lanes: array(count()) }));
export type LanesSwitch = Infer<typeof LanesSwitch>;

const pullBegin = object({
  op: literal('pull'),
  path: string(),
  chunkParams,
  /** As `PushBegin.lanes`: the client may open lanes for the data the agent sends. */
  lanes: optional(boolean()),
});
export type PullBegin = Infer<typeof pullBegin>;

/** Fetch a bucket's objects into `dest`: the node reads them itself, through read grants (see bucket fetch below). */
const bucketBegin = object({
  op: literal('bucket'),
  /** As in a push: `~/...` is the agent's home, otherwise absolute. */
  dest: string(),
  /** The bucket URI, for messages only (the node never lists it). */
  source: string(),
  /** The destination is one file (an object mount): the listing carries exactly one object. */
  file: optional(boolean()),
  deleteMode,
  dryRun: boolean(),
  /** Send `bucket-progress` frames while fetching. */
  progress: optional(boolean()),
});
export type BucketBegin = Infer<typeof bucketBegin>;

export const Begin = message('begin', variants('op', { push: pushBegin, pull: pullBegin, bucket: bucketBegin }));
export type Begin = Infer<typeof Begin>;

export const PushState = message(
  'state',
  object({
    /** The destination's current generation (null: never pushed, or its manifest was lost). */
    generation: nullable(string()),
    /** Files skysync placed that were changed on the remote since (latin1 paths). */
    drift: array(string()),
    /** Absolute destination path on the remote, for messages. */
    dest: string(),
    /**
     * How many entries the agent has records of at this destination. 0: it can find nothing by id there, so the
     * client sends data straight away (data mode) instead of asking first.
     */
    held: optional(count()),
    /** The chunk server opened for `PushBegin.relay`, or why there is none. */
    relay: optional(either(relayOffer, refusal)),
    /** The lane socket asked for with `PushBegin.lanes`, or why there is none. */
    lanes: optional(either(laneOffer, refusal)),
  }),
);
export type PushState = Infer<typeof PushState>;

export const PullState = message(
  'state',
  object({
    kind: literal('file', 'dir', 'symlink', 'missing'),
    path: string(),
    /** The lane socket asked for with `PullBegin.lanes`, or why there is none. */
    lanes: optional(either(laneOffer, refusal)),
  }),
);
export type PullState = Infer<typeof PullState>;

const fileFailure = object({ path: string(), error: string() }, 'a failure');
export type FileFailure = Infer<typeof fileFailure>;

export const Plan = message(
  'plan',
  object({
    /** 'data': chunk bytes follow without asking; 'need': the receiver first answers which chunks it lacks. */
    mode: literal('data', 'need'),
    compression,
    deleteMode,
    dryRun: boolean(),
    /** Pull only: the remote item is a single file. */
    single: optional(boolean()),
    /** Pull only: files the agent could not read (left out of the plan). */
    unreadable: optional(array(fileFailure)),
    /**
     * Push in need mode only: fetch the needed chunks from this chunk server first, in need order, and ask the
     * client (the `need` frame) only for those it did not deliver.
     */
    relay: optional(relayOffer),
  }),
);
export type Plan = Infer<typeof Plan>;

export const Done = message(
  'done',
  object({
    generation: nullable(string()),
    written: count(),
    deleted: integer(),
    kept: array(string()),
    failed: array(fileFailure),
    /** Present when the plan named a relay. */
    relay: optional(relayReport),
  }),
);
export type Done = Infer<typeof Done>;

/** A line for the user while the agent waits: `waiting`, for another push to the same destination. */
export const Notice = message('notice', object({ kind: literal('waiting'), message: string() }));
export type Notice = Infer<typeof Notice>;

export const ErrorMessage = message('error', object({ message: string(), code: string() }));
export type ErrorMessage = Infer<typeof ErrorMessage>;

// Bucket fetch (docs/PROTOCOL.md, "Bucket fetch"): the client lists the bucket with the user's credentials and
// sends the listing; the agent answers with what it must fetch; the client sends a read grant for each (a URL and
// headers good for a short time, kept in the agent's memory only); the agent fetches and places them.

/** One object of the listing: its path under the destination (the key without the URI's prefix, `/`-separated,
 * UTF-8 as the store has it), its size and its version (S3 ETag, GCS generation). */
const bucketObject = object({ path: string(), size: count(), version: string() }, 'a bucket object');
export type BucketObject = Infer<typeof bucketObject>;

export const BucketObjects = message(
  'bucket objects',
  object({
    objects: array(bucketObject),
    /** More batches follow. */
    more: boolean(),
  }),
);
export type BucketObjects = Infer<typeof BucketObjects>;

export const BucketWant = message(
  'bucket want',
  object({
    /** Absolute destination on the node, for messages. */
    dest: string(),
    /** Paths of the listing to fetch (new, changed, or no longer as placed). */
    fetch: array(string()),
    /** Keys that cannot be files here, each with why; never written. */
    refused: array(fileFailure),
    /** More wants follow (the listing has not ended, or objects of it are not settled yet). */
    more: boolean(),
  }),
);
export type BucketWant = Infer<typeof BucketWant>;

const readGrant = object(
  {
    uri: string(),
    url: string(),
    headers: record(string()),
    expiresAtMs: number(),
    size: count(),
    etag: string(),
    versionHeader: literal('etag', 'x-goog-generation'),
  },
  'a read grant',
);
export type ReadGrantMessage = Infer<typeof readGrant>;

export const BucketGrants = message(
  'bucket grants',
  object({
    grants: array(object({ path: string(), grant: readGrant }, 'a granted object')),
    more: boolean(),
  }),
);
export type BucketGrants = Infer<typeof BucketGrants>;

/** While objects come down, when the begin asked: totals so far on this node. */
export const BucketProgress = message('bucket progress', object({ fetched: count(), bytesFetched: count(), failed: count() }));
export type BucketProgress = Infer<typeof BucketProgress>;

export const BucketDone = message(
  'done',
  object({
    fetched: count(),
    skipped: count(),
    bytesFetched: count(),
    deleted: count(),
    /** Placed files gone from the bucket that a job changed since: left in place. */
    kept: array(string()),
    failed: array(fileFailure),
    /** Placed files gone from the bucket, left in place because of `deleteMode: 'none'`. */
    stale: count(),
  }),
);
export type BucketDone = Infer<typeof BucketDone>;

// FUSE mounts (Storage MOUNT and MOUNT_CACHED): the client's request to the agent's `fuse` subcommand, one JSON
// document on its stdin (docs/PROTOCOL.md, "FUSE mounts"). Credentials travel only here and stay in the memory
// of the rclone process the agent starts.

const fuseMode = literal('MOUNT', 'MOUNT_CACHED');

export const FuseMountSpec = object(
  {
    /** The task's key, for messages. */
    key: string(),
    /** Where the bucket appears on the node, as the task wrote it (`~/` allowed). */
    path: string(),
    /** The bucket URI, for messages and to tell a mount that is already right. */
    source: string(),
    mode: fuseMode,
    /** rclone's remote settings (type, endpoint, region...): nothing secret. */
    backend: record(string()),
    /** `bucket[/prefix]` on that remote. */
    remotePath: string(),
    /** Environment for rclone that carries the credentials (short-lived), kept in its memory only. */
    secrets: record(string()),
    expiresAtMs: nullable(number()),
  },
  'a FUSE mount',
);
export type FuseMountSpec = Infer<typeof FuseMountSpec>;

export const FuseRequest = message(
  'fuse request',
  object({
    /** Mount (or keep, or restart) these; for `flush` and `unmount`, the restart of a dead mount needs them too. */
    mounts: array(FuseMountSpec),
    /** Only these paths (as the task wrote them); empty: every mount of this node. */
    only: array(string()),
    /** A path of `only` that is not a mount of this node is passed over, not refused (the barrier of a task). */
    skipUnknown: optional(boolean()),
  }),
);
export type FuseRequest = Infer<typeof FuseRequest>;

/** What the agent's `fuse` subcommand reports, one JSON line each on its stdout. */
export const FuseEvent = message(
  'fuse event',
  variants('event', {
    mounted: object({ event: literal('mounted'), key: string(), path: string(), how: literal('mounted', 'kept', 'remounted', 'resumed') }),
    flushing: object({ event: literal('flushing'), path: string(), files: count(), bytesInFlight: count(), bytesPerSecond: count() }),
    flushed: object({ event: literal('flushed'), path: string(), waitedMs: count(), uploads: count() }),
    unmounted: object({ event: literal('unmounted'), path: string() }),
    status: object({ event: literal('status'), path: string(), written: string(), key: string(), source: string(), mode: fuseMode, alive: boolean(), mounted: boolean() }),
    failed: object({ event: literal('failed'), key: string(), path: string(), error: string() }),
    /** A mount whose rclone is gone, with writes perhaps queued: the client sends credentials to restart it. */
    dead: object({ event: literal('dead'), path: string(), written: string(), key: string(), source: string(), mode: fuseMode }),
  }),
);
export type FuseEvent = Infer<typeof FuseEvent>;
