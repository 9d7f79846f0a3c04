// `@skysync/store/cloud`: the S3 and GCS clients, for the client side (engine, CLI, tests). Kept out of the
// package's main entry so that the agent, which only reads through grants, bundles no SDK. The engine opens stores
// through `@skysync/store/open`, which loads one SDK at a time.
export { GcsObjectStore, gcsEndpoint, type GcsStoreOptions } from './gcs.js';
export { S3ObjectStore, s3Endpoint, type S3StoreOptions } from './s3.js';
export { type CloudOptions, openObjectStore } from './open.js';
export { s3TemporaryCredentials, type S3TemporaryCredentials } from './s3.js';
export { gcsAccessToken } from './gcs.js';
