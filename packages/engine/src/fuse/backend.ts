// What a node's rclone needs to reach a bucket: the remote's settings (nothing secret) and, in its environment
// only, credentials that expire (temporary-credentials.ts in @skysync/store). SKYSYNC_MOUNT_CREDENTIALS=node gives
// none: the node's own identity (an instance profile, a service account) is used, as rclone finds it.

import type { FuseMountSpec } from '@skysync/protocol';
import type { StoreUri } from '@skysync/store';

export type FuseMode = FuseMountSpec['mode'];

export interface FuseTarget {
  key: string;
  /** Where it appears on the node, as the task wrote it. */
  path: string;
  uri: StoreUri;
  mode: FuseMode;
}

function uriText(u: StoreUri): string {
  return `${u.scheme}://${u.bucket}${u.prefix ? `/${u.prefix.replace(/\/+$/, '')}` : ''}`;
}

export async function fuseSpec(t: FuseTarget): Promise<FuseMountSpec> {
  // One SDK at a time, and only for credentials: the endpoints come without either.
  const cloud = await import('@skysync/store/open');
  const nodeIdentity = process.env.SKYSYNC_MOUNT_CREDENTIALS === 'node';
  const remotePath = `${t.uri.bucket}${t.uri.prefix ? `/${t.uri.prefix.replace(/\/+$/, '')}` : ''}`;
  const base = { key: t.key, path: t.path, source: uriText(t.uri), mode: t.mode, remotePath };
  if (t.uri.scheme === 's3') {
    const endpoint = cloud.s3Endpoint();
    const backend: Record<string, string> = {
      type: 's3',
      provider: endpoint ? 'Other' : 'AWS',
      env_auth: 'true',
      // A bucket deleted under a mount is reported, never silently made again by an upload.
      no_check_bucket: 'true',
      region: process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      // S3-compatible servers: rclone's check of a finished multipart upload asks for the version id the server
      // answered, and some (moto among them) answer "null" for an unversioned bucket and then refuse that id, so
      // every large upload would be retried for ever. The upload's own checksums still hold.
      ...(endpoint ? { endpoint, force_path_style: 'true', no_head: 'true' } : {}),
    };
    if (nodeIdentity) return { ...base, backend, secrets: {}, expiresAtMs: null };
    const c = await cloud.s3TemporaryCredentials();
    return {
      ...base,
      backend,
      secrets: { AWS_ACCESS_KEY_ID: c.accessKeyId, AWS_SECRET_ACCESS_KEY: c.secretAccessKey, AWS_SESSION_TOKEN: c.sessionToken },
      expiresAtMs: c.expiresAtMs,
    };
  }
  const endpoint = cloud.gcsEndpoint();
  const backend: Record<string, string> = {
    type: 'google cloud storage',
    bucket_policy_only: 'true',
    ...(endpoint ? { endpoint: `${endpoint.replace(/\/+$/, '')}/storage/v1/` } : {}),
  };
  if (nodeIdentity) return { ...base, backend: { ...backend, env_auth: 'true' }, secrets: {}, expiresAtMs: null };
  const token = process.env.GOOGLE_OAUTH_ACCESS_TOKEN
    ? { token: process.env.GOOGLE_OAUTH_ACCESS_TOKEN, expiresAtMs: Date.now() + 30 * 60 * 1000 }
    : await cloud.gcsAccessToken(t.uri);
  const oauth = JSON.stringify({ access_token: token.token, token_type: 'Bearer', expiry: new Date(token.expiresAtMs).toISOString() });
  return { ...base, backend, secrets: { RCLONE_CONFIG_SKYSYNC_TOKEN: oauth }, expiresAtMs: token.expiresAtMs };
}
