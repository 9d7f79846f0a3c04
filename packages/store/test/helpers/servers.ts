// The real servers for a test file, and stores on them, for both schemes. Starts moto and fake-gcs-server in
// beforeAll and stops them in afterAll. Outside CI a missing install skips the file (with the command to run);
// under CI=true it fails (objectServersSkipReason throws).
import crypto, { randomUUID } from 'node:crypto';
import { type ObjectStore, parseStoreUri } from '@skysync/store';
import { GcsObjectStore, type GcsStoreOptions, S3ObjectStore, type S3StoreOptions } from '@skysync/store/cloud';
import { afterAll, beforeAll } from 'vitest';
import { type GcsServer, type S3Server, objectServersSkipReason, startGcsServer, startS3Server } from '../../../../test/helpers/object-servers.js';

export const skipReason = objectServersSkipReason();
if (skipReason) console.warn(`object-store tests skipped: ${skipReason}`);

export const TEST_CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };
export const TEST_TOKEN = async () => ({ token: 'test-token', expiresAtMs: Date.now() + 600_000 });

export interface Servers {
  s3: S3Server;
  gcs: GcsServer;
}

/** Starts both servers for the file; the result gives them once the tests run. */
export function objectServers(): () => Servers {
  let servers: Servers | undefined;
  beforeAll(async () => {
    if (skipReason) return;
    const [s3, gcs] = await Promise.all([startS3Server(), startGcsServer()]);
    servers = { s3, gcs };
  });
  afterAll(async () => {
    await Promise.all([servers?.s3.stop(), servers?.gcs.stop()]);
  });
  return () => {
    if (!servers) throw new Error('objectServers: the servers start only once the tests run');
    return servers;
  };
}

export function s3Store(servers: Servers, bucket: string, options: S3StoreOptions = {}): S3ObjectStore {
  return new S3ObjectStore(parseStoreUri(`s3://${bucket}`), { endpoint: servers.s3.endpoint, credentials: TEST_CREDENTIALS, ...options });
}

export function gcsStore(servers: Servers, bucket: string, options: GcsStoreOptions = {}): GcsObjectStore {
  return new GcsObjectStore(parseStoreUri(`gs://${bucket}`), { apiEndpoint: servers.gcs.endpoint, projectId: 'test', accessToken: TEST_TOKEN, ...options });
}

export type Scheme = 's3' | 'gs';

/** A new, empty bucket on the scheme's server. */
export async function freshStore(servers: Servers, scheme: Scheme): Promise<ObjectStore> {
  const bucket = `t-${randomUUID().slice(0, 18)}`;
  const store = scheme === 's3' ? s3Store(servers, bucket) : gcsStore(servers, bucket);
  await store.createBucket();
  return store;
}

export function randomBytes(size: number): Buffer {
  return crypto.randomBytes(size);
}

export async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}
