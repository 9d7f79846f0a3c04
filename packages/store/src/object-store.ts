// What a bucket has to offer for skysync to sync to and from it. The operations are the ones a sync needs and both
// stores have: listing by prefix in key order (to compare against a tree), a metadata read (to skip what did not
// change), range reads (to fetch a large object in parallel), writes made of new bytes and ranges of objects the
// store already holds (server-side copies, so unchanged data does not cross the client's link), and short-lived
// read grants a node uses without any SDK or secret (grant.ts). The S3 and GCS clients are in s3.ts and gcs.ts,
// reached through `@skysync/store/cloud` so that the agent's bundle never pulls an SDK in.

import type { ReadGrant } from './grant.js';
import type { StoreUri } from './uri.js';

/** What a listing or a head request says about one object. */
export interface ObjectInfo {
  /** Full key in the bucket (the store's prefix included). */
  key: string;
  size: number;
  /** The store's version tag (S3 ETag without quotes, GCS generation): it changes whenever the object's bytes do. */
  etag: string;
  mtimeMs: number;
}

/**
 * One piece of an object being written: bytes from the caller (in memory or a range of a local file, read only
 * when sent), or a byte range `[start, end)` of an object already stored, which the store copies on its side.
 */
export type ObjectPart =
  | { kind: 'bytes'; data: Uint8Array }
  | { kind: 'file'; path: string; start: number; end: number }
  | { kind: 'copy'; key: string; start: number; end: number; etag?: string };

/** A write that must not overwrite what another writer put there meanwhile: S3 If-None-Match/If-Match, GCS ifGenerationMatch. */
export type WriteCondition = { ifAbsent: true } | { ifMatch: string };

export interface PutOptions {
  condition?: WriteCondition;
}

/** What a write cost: bytes sent from here, bytes the store copied on its side. */
export interface PutResult {
  info: ObjectInfo;
  bytesSent: number;
  bytesCopied: number;
}

export interface ListOptions {
  /** Start after this key (exclusive). */
  after?: string;
  /** Objects per request (default the store's maximum, 1000). */
  pageSize?: number;
}

export interface GrantOptions {
  /** How long the grant stays usable (default 3600 s; S3 allows at most 7 days). */
  expiresInSeconds?: number;
  /**
   * The object as a listing just saw it: the grant is made for that size and version without asking the store
   * again (a request per object would cost a fetch of many small objects more than the objects themselves). A
   * node that then finds another version fails that object (`changed`) instead of writing it.
   */
  known?: ObjectInfo;
}

/**
 * Access to one place in an object store (a `StoreUri`). Keys passed in and returned are full keys.
 * Missing objects are answered with null, not an error; every error is a `StoreError` (errors.ts), one line
 * naming the URI and what to do.
 */
export interface ObjectStore {
  readonly uri: StoreUri;
  /** Every object whose key starts with `prefix`, in key order, page by page. */
  list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo>;
  /** The object's metadata, or null when there is no such object. */
  head(key: string): Promise<ObjectInfo | null>;
  /** Bytes `start` (inclusive) to `end` (exclusive) of the object, as a stream; the whole object when no range. */
  read(key: string, range?: { start: number; end: number }): Promise<NodeJS.ReadableStream>;
  /** Bytes `start` to `end` (exclusive) of the object, in memory. */
  getRange(key: string, start: number, end: number): Promise<Uint8Array>;
  /**
   * Writes `key` as the concatenation of `parts`, replacing any object there only once all parts are in (readers
   * see the old object or the new one). Fails with a StoreError of kind 'precondition' when `condition` does not
   * hold.
   */
  put(key: string, parts: readonly ObjectPart[], options?: PutOptions): Promise<PutResult>;
  /** Removes the objects; keys that do not exist are not an error. */
  remove(keys: readonly string[]): Promise<void>;
  /** Resolves when the bucket exists and is readable; a StoreError ('missing-bucket', 'denied', 'unreachable') otherwise. */
  checkBucket(): Promise<void>;
  /** Creates the bucket; 'exists' when it was already there and ours to use. */
  createBucket(options?: { region?: string }): Promise<'created' | 'exists'>;
  /** Deletes the bucket, which must be empty (remove its objects first, the reserved prefix's included). */
  deleteBucket(): Promise<void>;
  /** A short-lived grant to read `key` without credentials (grant.ts `fetchObject`). */
  readGrant(key: string, options?: GrantOptions): Promise<ReadGrant>;
}
