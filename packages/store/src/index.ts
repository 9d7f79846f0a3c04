// @skysync/store: object-store access (S3, GCS) for the engine and the agent. This entry carries no SDK: bucket
// URIs, the ObjectStore interface, errors, and read grants with the SDK-free fetch the agent uses. The S3 and GCS
// clients are in `@skysync/store/cloud` (client side only). It may import @skysync/protocol and nothing else of ours.
export { StoreError, type StoreErrorKind } from './errors.js';
export { GrantError, type FetchOptions, type FetchRange, type GrantErrorKind, type ReadGrant, bareEtag, fetchObject, streamObject } from './grant.js';
export type { GrantOptions, ListOptions, ObjectInfo, ObjectPart, ObjectStore, PutOptions, PutResult, WriteCondition } from './object-store.js';
export { StoreUriError, formatStoreUri, isStoreUri, parseStoreUri, type StoreScheme, type StoreUri } from './uri.js';
