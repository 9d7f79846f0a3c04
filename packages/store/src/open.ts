// `@skysync/store/open`: the store a bucket URI names, loading only that store's SDK, on first use. The CLI bundles
// each SDK side apart (packages/cli/bundle.mjs): an S3 mount never pays for parsing and starting the GCS SDK.
import type { GcsStoreOptions } from './gcs.js';
import type { ObjectStore } from './object-store.js';
import type { S3StoreOptions } from './s3.js';
import type { StoreUri } from './uri.js';

export interface CloudOptions {
  s3?: S3StoreOptions;
  gcs?: GcsStoreOptions;
}

/** The store a bucket URI names, with the endpoint and credentials the options or the environment give. */
export async function openObjectStore(uri: StoreUri, options: CloudOptions = {}): Promise<ObjectStore> {
  if (uri.scheme === 's3') {
    const { S3ObjectStore } = await import('./s3.js');
    return new S3ObjectStore(uri, options.s3);
  }
  const { GcsObjectStore } = await import('./gcs.js');
  return new GcsObjectStore(uri, options.gcs);
}

/** Short-lived S3 credentials for a node (`s3TemporaryCredentials` in s3.ts), loading the S3 SDK only. */
export async function s3TemporaryCredentials(options: S3StoreOptions = {}): Promise<import('./s3.js').S3TemporaryCredentials> {
  const { s3TemporaryCredentials: make } = await import('./s3.js');
  return make(options);
}

/** A short-lived GCS access token for a node, loading the GCS SDK only. */
export async function gcsAccessToken(uri: StoreUri, options: GcsStoreOptions = {}): Promise<{ token: string; expiresAtMs: number }> {
  const { gcsAccessToken: make } = await import('./gcs.js');
  return make(uri, options);
}

export { gcsEndpoint, s3Endpoint } from './endpoints.js';
