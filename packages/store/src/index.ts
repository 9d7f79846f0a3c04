// @skysync/store: object-store access (S3, GCS) for the engine and the agent. For now the bucket URI and the
// interface [storage] will implement; it may import @skysync/protocol and nothing else of ours.
export type { ObjectInfo, ObjectPart, ObjectStore } from './object-store.js';
export { StoreUriError, formatStoreUri, isStoreUri, parseStoreUri, type StoreScheme, type StoreUri } from './uri.js';
