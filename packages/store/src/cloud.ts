// `@skysync/store/cloud`: the S3 and GCS clients, for the client side (engine, CLI). Kept out of the package's
// main entry so that the agent, which only reads through grants, bundles no SDK.
import { GcsObjectStore, type GcsStoreOptions } from './gcs.js';
import type { ObjectStore } from './object-store.js';
import { S3ObjectStore, type S3StoreOptions } from './s3.js';
import type { StoreUri } from './uri.js';

export { GcsObjectStore, gcsEndpoint, type GcsStoreOptions } from './gcs.js';
export { S3ObjectStore, s3Endpoint, type S3StoreOptions } from './s3.js';

export interface CloudOptions {
  s3?: S3StoreOptions;
  gcs?: GcsStoreOptions;
}

/** The store a bucket URI names, with the endpoint and credentials the options or the environment give. */
export function openObjectStore(uri: StoreUri, options: CloudOptions = {}): ObjectStore {
  return uri.scheme === 's3' ? new S3ObjectStore(uri, options.s3) : new GcsObjectStore(uri, options.gcs);
}
export { gcsAccessToken, s3TemporaryCredentials, type S3TemporaryCredentials, type TemporaryCredentialOptions } from './temporary-credentials.js';
