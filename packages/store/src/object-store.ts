// What a bucket has to offer for skysync to sync to and from it. Only the shape is here: the S3 and GCS clients
// that implement it come with [storage]. The operations are the ones a sync needs and both stores have:
// listing by prefix in key order (to compare against a tree), a metadata read (to skip what did not change),
// range reads (to reuse chunks of an object already there), and writes made of new bytes and ranges of objects
// the store already holds (server-side copies, so unchanged data does not cross the client's link).

import type { StoreUri } from './uri.js';

/** What a listing or a head request says about one object. */
export interface ObjectInfo {
  /** Full key in the bucket (the store's prefix included). */
  key: string;
  size: number;
  /** The store's version tag (S3 ETag, GCS generation): it changes whenever the object's bytes do. */
  etag: string;
  mtimeMs: number;
}

/** One piece of an object being written: bytes from the caller, or a byte range of an object already stored. */
export type ObjectPart = { kind: 'bytes'; data: Uint8Array } | { kind: 'copy'; key: string; start: number; end: number };

/**
 * Access to one place in an object store (a `StoreUri`). Keys passed in and returned are full keys.
 * Implementations answer "missing" with null, not an error, and name the URI and key in every error.
 */
export interface ObjectStore {
  readonly uri: StoreUri;
  /** Every object whose key starts with `prefix`, in key order; from the first key after `after` when given. */
  list(prefix: string, after?: string): AsyncIterable<ObjectInfo>;
  /** The object's metadata, or null when there is no such object. */
  head(key: string): Promise<ObjectInfo | null>;
  /** Bytes `start` (inclusive) to `end` (exclusive) of the object. */
  getRange(key: string, start: number, end: number): Promise<Uint8Array>;
  /**
   * Writes `key` as the concatenation of `parts`, replacing any object there only once all parts are in (readers
   * see the old object or the new one). `copy` parts are copied inside the store where it can (S3 UploadPartCopy);
   * a store that cannot reads them and sends them back.
   */
  put(key: string, parts: readonly ObjectPart[]): Promise<ObjectInfo>;
  /** Removes the objects; keys that do not exist are not an error. */
  remove(keys: readonly string[]): Promise<void>;
}
