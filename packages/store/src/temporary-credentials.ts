// Short-lived credentials for a node that writes to a bucket through a FUSE mount (Storage MOUNT and MOUNT_CACHED):
// the node gets these, never the user's long-lived keys. S3: the client's credentials as they are when they are
// already temporary (SSO, an assumed role), else an STS session token of their own (GetSessionToken). GCS: an
// OAuth access token (an hour, as Google issues them).

import { GetSessionTokenCommand, STSClient } from '@aws-sdk/client-sts';
import { S3Client } from '@aws-sdk/client-s3';
import { StoreError } from './errors.js';
import { GcsObjectStore, type GcsStoreOptions } from './gcs.js';
import { type S3StoreOptions, s3Endpoint } from './s3.js';
import type { StoreUri } from './uri.js';

export interface S3TemporaryCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  /** null: the provider gave no expiry. */
  expiresAtMs: number | null;
}

export interface TemporaryCredentialOptions {
  s3?: S3StoreOptions;
  gcs?: GcsStoreOptions;
  /** How long an STS session lasts (default 12 h; STS allows 15 min to 36 h for users). */
  durationSeconds?: number;
}

function region(options: S3StoreOptions): string {
  return options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1';
}

export async function s3TemporaryCredentials(options: TemporaryCredentialOptions = {}): Promise<S3TemporaryCredentials> {
  const s3 = options.s3 ?? {};
  const client = new S3Client({ region: region(s3), ...(s3.credentials ? { credentials: s3.credentials } : {}) });
  let own: Awaited<ReturnType<typeof client.config.credentials>>;
  try {
    own = await client.config.credentials();
  } catch (e) {
    throw new StoreError('denied', `no AWS credentials to make a mount's temporary ones from (${(e as Error).message}); configure them as for the aws CLI`);
  } finally {
    client.destroy();
  }
  if (own.sessionToken) {
    return { accessKeyId: own.accessKeyId, secretAccessKey: own.secretAccessKey, sessionToken: own.sessionToken, expiresAtMs: own.expiration?.getTime() ?? null };
  }
  const endpoint = process.env.AWS_ENDPOINT_URL_STS ?? s3Endpoint(s3);
  const sts = new STSClient({ region: region(s3), credentials: own, ...(endpoint ? { endpoint } : {}) });
  try {
    const r = await sts.send(new GetSessionTokenCommand({ DurationSeconds: options.durationSeconds ?? 12 * 3600 }));
    const c = r.Credentials;
    if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken) throw new Error('STS returned no credentials');
    return { accessKeyId: c.AccessKeyId, secretAccessKey: c.SecretAccessKey, sessionToken: c.SessionToken, expiresAtMs: c.Expiration?.getTime() ?? null };
  } catch (e) {
    if (e instanceof StoreError) throw e;
    throw new StoreError(
      'denied',
      `could not get temporary AWS credentials for the mount (sts GetSessionToken: ${(e as Error).message}); give temporary credentials (a role or SSO), or set SKYSYNC_MOUNT_CREDENTIALS=node when the nodes have their own`,
    );
  } finally {
    sts.destroy();
  }
}

export async function gcsAccessToken(uri: StoreUri, options: TemporaryCredentialOptions = {}): Promise<{ token: string; expiresAtMs: number }> {
  return new GcsObjectStore(uri, options.gcs).accessToken();
}
