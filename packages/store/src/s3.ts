// ObjectStore on S3 (and S3-compatible endpoints) with @aws-sdk/client-s3. Client side only: the agent never
// imports this file (it reads through presigned URLs, grant.ts).

import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { GetSessionTokenCommand, STSClient } from '@aws-sdk/client-sts';
import { s3Endpoint } from './endpoints.js';
import { type ErrorContext, StoreError, networkCode, storeError } from './errors.js';
import { type ReadGrant, bareEtag } from './grant.js';
import type { GrantOptions, ListOptions, ObjectInfo, ObjectPart, ObjectStore, PutOptions, PutResult } from './object-store.js';
import { type UploadPart, planS3Parts, readPieces, totalSize } from './parts.js';
import { PROBE_KEY, type UrlShape, learnShape, presignGet, sameUrl } from './presign.js';
import { type StoreUri, formatStoreUri } from './uri.js';
import { mapLimit, storeTimeoutMs } from './util.js';

export interface S3StoreOptions {
  /** An S3-compatible endpoint; default AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL, then AWS itself. */
  endpoint?: string;
  /** Default AWS_REGION, then AWS_DEFAULT_REGION, then us-east-1. */
  region?: string;
  /** Default: the SDK's chain (environment, profiles, SSO, instance roles). */
  credentials?: S3ClientConfig['credentials'];
  /** Path-style addressing; default on when an endpoint is set (what S3-compatible servers expect). */
  forcePathStyle?: boolean;
  /** Attempts per request (default 3). */
  maxAttempts?: number;
  /** Parts sent at once in a multipart upload (default 8). */
  concurrency?: number;
  /** Keys under this prefix are skysync's own (default `.skysync/`): listings of other prefixes leave them out. */
  reservedPrefix?: string;
}

export { s3Endpoint };

interface SdkError {
  name?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
}

const SINGLE_PUT_LIMIT = 16 * 1024 * 1024;

// The SDK warns on every process that its releases after January 2027 need Node 22; the pinned version runs on
// the Node 20 skysync supports, so the warning would only be noise in the CLI's output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export class S3ObjectStore implements ObjectStore {
  readonly client: S3Client;
  private readonly endpoint: string | undefined;
  private readonly concurrency: number;
  private readonly reservedPrefix: string;

  constructor(
    readonly uri: StoreUri,
    options: S3StoreOptions = {},
  ) {
    this.endpoint = s3Endpoint(options);
    this.concurrency = options.concurrency ?? 8;
    this.reservedPrefix = options.reservedPrefix ?? '.skysync/';
    this.client = new S3Client({
      region: options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      maxAttempts: options.maxAttempts ?? 3,
      forcePathStyle: options.forcePathStyle ?? this.endpoint !== undefined,
      ...(this.endpoint ? { endpoint: this.endpoint } : {}),
      ...(options.credentials ? { credentials: options.credentials } : {}),
      // The SDK waits forever for an endpoint that accepts and never answers; an idle socket is an error here.
      requestHandler: { connectionTimeout: storeTimeoutMs(), socketTimeout: storeTimeoutMs() },
    });
  }

  private context(key?: string): ErrorContext {
    const bucketUri = formatStoreUri({ ...this.uri, prefix: '' });
    return {
      where: key === undefined ? bucketUri : `${bucketUri}/${key}`,
      bucket: bucketUri,
      endpoint: this.endpoint ?? 'AWS S3',
      debugCommand: `aws s3 ls ${bucketUri}${this.endpoint ? ` --endpoint-url ${this.endpoint}` : ''}`,
      endpointSetting: 'AWS_ENDPOINT_URL',
    };
  }

  private fail(error: unknown, operation: string, key?: string): StoreError {
    if (error instanceof StoreError) return error;
    const sdk = error as SdkError;
    return storeError({ status: sdk.$metadata?.httpStatusCode, code: sdk.name ?? sdk.Code, networkCode: networkCode(error) }, this.context(key), operation);
  }

  private async call<T>(operation: string, key: string | undefined, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw this.fail(error, operation, key);
    }
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const hideReserved = !prefix.startsWith(this.reservedPrefix);
    let token: string | undefined;
    do {
      const page = await this.call('list', prefix, () =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.uri.bucket,
            Prefix: prefix,
            MaxKeys: options.pageSize ?? 1000,
            ...(token ? { ContinuationToken: token } : options.after ? { StartAfter: options.after } : {}),
          }),
        ),
      );
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined || (hideReserved && object.Key.startsWith(this.reservedPrefix))) continue;
        yield { key: object.Key, size: object.Size ?? 0, etag: bareEtag(object.ETag ?? ''), mtimeMs: object.LastModified?.getTime() ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async head(key: string): Promise<ObjectInfo | null> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.uri.bucket, Key: key }));
      return { key, size: head.ContentLength ?? 0, etag: bareEtag(head.ETag ?? ''), mtimeMs: head.LastModified?.getTime() ?? 0 };
    } catch (error) {
      const failure = this.fail(error, 'head', key);
      // HeadObject has no body, so a missing bucket looks like a missing key: only the bucket check can tell.
      if (failure.kind === 'missing-object') return null;
      throw failure;
    }
  }

  async read(key: string, range?: { start: number; end: number }): Promise<NodeJS.ReadableStream> {
    const response = await this.call('read', key, () =>
      this.client.send(new GetObjectCommand({ Bucket: this.uri.bucket, Key: key, ...(range ? { Range: `bytes=${range.start}-${range.end - 1}` } : {}) })),
    );
    return response.Body as NodeJS.ReadableStream;
  }

  async getRange(key: string, start: number, end: number, etag?: string): Promise<Uint8Array> {
    if (end <= start) return new Uint8Array(0);
    return this.call('read', key, async () => {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.uri.bucket, Key: key, Range: `bytes=${start}-${end - 1}`, ...(etag ? { IfMatch: etag } : {}) }));
      const bytes = await response.Body!.transformToByteArray();
      if (bytes.length !== end - start) throw new StoreError('failed', `${this.context(key).where}: read ${bytes.length} bytes of range ${start}-${end}`);
      return bytes;
    });
  }

  async put(key: string, parts: readonly ObjectPart[], options: PutOptions = {}): Promise<PutResult> {
    const size = totalSize(parts);
    const plan = planS3Parts(parts);
    if (size <= SINGLE_PUT_LIMIT && plan.every((part) => part.kind === 'send')) return this.putSingle(key, parts, options);
    return this.putMultipart(key, plan, options);
  }

  private conditionHeaders(options: PutOptions): { IfNoneMatch?: string; IfMatch?: string } {
    const condition = options.condition;
    if (!condition) return {};
    return 'ifAbsent' in condition ? { IfNoneMatch: '*' } : { IfMatch: `"${bareEtag(condition.ifMatch)}"` };
  }

  private readStored = (key: string, start: number, end: number, etag?: string): Promise<Uint8Array> => this.getRange(key, start, end, etag);

  private async putSingle(key: string, parts: readonly ObjectPart[], options: PutOptions): Promise<PutResult> {
    const body = await readPieces(parts, this.readStored);
    const response = await this.call('put', key, () =>
      this.client.send(new PutObjectCommand({ Bucket: this.uri.bucket, Key: key, Body: body, ContentLength: body.length, ...this.conditionHeaders(options) })),
    );
    return { info: { key, size: body.length, etag: bareEtag(response.ETag ?? ''), mtimeMs: Date.now() }, bytesSent: body.length, bytesCopied: 0 };
  }

  private async putMultipart(key: string, plan: UploadPart[], options: PutOptions): Promise<PutResult> {
    const condition = options.condition;
    // Some S3-compatible servers ignore If-Match on CompleteMultipartUpload: check first as well, so a lost race
    // is caught before the parts are sent on those, and at completion on S3 itself.
    if (condition && 'ifMatch' in condition) {
      const current = await this.head(key);
      if (!current || current.etag !== bareEtag(condition.ifMatch)) throw new StoreError('precondition', `${this.context(key).where}: changed by another writer during put`);
    }
    const created = await this.call('put', key, () => this.client.send(new CreateMultipartUploadCommand({ Bucket: this.uri.bucket, Key: key })));
    const uploadId = created.UploadId!;
    let bytesSent = 0;
    let bytesCopied = 0;
    try {
      const etags = await mapLimit(plan, this.concurrency, async (part, index) => {
        const PartNumber = index + 1;
        if (part.kind === 'copy') {
          bytesCopied += part.end - part.start;
          const copied = await this.call('copy part', key, () =>
            this.client.send(
              new UploadPartCopyCommand({
                Bucket: this.uri.bucket,
                Key: key,
                UploadId: uploadId,
                PartNumber,
                CopySource: `${this.uri.bucket}/${part.key.split('/').map(encodeURIComponent).join('/')}`,
                CopySourceRange: `bytes=${part.start}-${part.end - 1}`,
                ...(part.etag ? { CopySourceIfMatch: `"${bareEtag(part.etag)}"` } : {}),
              }),
            ),
          );
          return copied.CopyPartResult?.ETag ?? '';
        }
        const body = await readPieces(part.pieces, this.readStored);
        bytesSent += body.length;
        const sent = await this.call('upload part', key, () =>
          this.client.send(new UploadPartCommand({ Bucket: this.uri.bucket, Key: key, UploadId: uploadId, PartNumber, Body: body, ContentLength: body.length })),
        );
        return sent.ETag ?? '';
      });
      const done = await this.call('complete upload', key, () =>
        this.client.send(
          new CompleteMultipartUploadCommand({
            Bucket: this.uri.bucket,
            Key: key,
            UploadId: uploadId,
            MultipartUpload: { Parts: etags.map((ETag, index) => ({ ETag, PartNumber: index + 1 })) },
            ...this.conditionHeaders(options),
          }),
        ),
      );
      const size = plan.reduce((sum, part) => sum + (part.kind === 'copy' ? part.end - part.start : part.size), 0);
      return { info: { key, size, etag: bareEtag(done.ETag ?? ''), mtimeMs: Date.now() }, bytesSent, bytesCopied };
    } catch (error) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.uri.bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
      throw error;
    }
  }

  async remove(keys: readonly string[]): Promise<void> {
    for (let offset = 0; offset < keys.length; offset += 1000) {
      const batch = keys.slice(offset, offset + 1000);
      const response = await this.call('delete', undefined, () =>
        this.client.send(new DeleteObjectsCommand({ Bucket: this.uri.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } })),
      );
      const failed = response.Errors?.[0];
      if (failed) throw this.fail({ name: failed.Code, $metadata: {} }, 'delete', failed.Key);
    }
  }

  async deleteBucket(): Promise<void> {
    await this.call('bucket delete', undefined, () => this.client.send(new DeleteBucketCommand({ Bucket: this.uri.bucket })));
  }

  async checkBucket(): Promise<void> {
    await this.call('bucket check', undefined, () => this.client.send(new HeadBucketCommand({ Bucket: this.uri.bucket })));
  }

  async createBucket(options: { region?: string } = {}): Promise<'created' | 'exists'> {
    // us-east-1 answers a second CreateBucket of one's own bucket with success: ask first.
    try {
      await this.checkBucket();
      return 'exists';
    } catch (error) {
      if (!(error instanceof StoreError) || error.kind !== 'missing-bucket') throw error;
    }
    const region = options.region ?? (await this.client.config.region());
    try {
      await this.client.send(
        new CreateBucketCommand({
          Bucket: this.uri.bucket,
          ...(region && region !== 'us-east-1' ? { CreateBucketConfiguration: { LocationConstraint: region as never } } : {}),
        }),
      );
      return 'created';
    } catch (error) {
      const name = (error as SdkError).name;
      if (name === 'BucketAlreadyOwnedByYou') return 'exists';
      if (name === 'BucketAlreadyExists') {
        throw new StoreError('denied', `${this.context().where}: the name is taken by another account; choose another bucket name`);
      }
      throw this.fail(error, 'bucket create');
    }
  }

  /** The URL shape this store's presigned URLs have, when presign.ts makes the same URLs as the SDK (else null). */
  private shape: Promise<UrlShape | null> | undefined;

  private urlShape(): Promise<UrlShape | null> {
    this.shape ??= (async () => {
      const now = new Date();
      const sdk = await getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.uri.bucket, Key: PROBE_KEY }), { expiresIn: 3600, signingDate: now });
      const shape = learnShape(sdk, PROBE_KEY);
      return shape && sameUrl(sdk, presignGet(shape, await this.client.config.credentials(), PROBE_KEY, 3600, now)) ? shape : null;
    })().catch(() => null);
    return this.shape;
  }

  async readGrant(key: string, options: GrantOptions = {}): Promise<ReadGrant> {
    const info = options.known ?? (await this.head(key));
    if (!info) throw new StoreError('missing-object', `${this.context(key).where}: no such object to grant a read of`);
    const expiresIn = options.expiresInSeconds ?? 3600;
    const shape = await this.urlShape();
    let url: string;
    let expiresAtMs = Date.now() + expiresIn * 1000;
    if (shape) {
      const credentials = await this.call('grant', key, () => this.client.config.credentials());
      url = presignGet(shape, credentials, key, expiresIn, new Date());
      // Temporary credentials end the URL's life with theirs.
      if (credentials.expiration) expiresAtMs = Math.min(expiresAtMs, credentials.expiration.getTime());
    } else {
      url = await this.call('grant', key, () => getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.uri.bucket, Key: key }), { expiresIn }));
    }
    return { uri: this.context(key).where, url, headers: {}, expiresAtMs, size: info.size, etag: info.etag, versionHeader: 'etag' };
  }
}

export interface S3TemporaryCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  /** null: the provider gave no expiry. */
  expiresAtMs: number | null;
}

function defaultRegion(options: S3StoreOptions): string {
  return options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1';
}

/**
 * Short-lived credentials for a node that writes to a bucket through a FUSE mount (Storage MOUNT and MOUNT_CACHED):
 * the client's own when they are already temporary (SSO, an assumed role), else an STS session token made from
 * them (GetSessionToken, `durationSeconds`, default 12 h). Never the user's long-lived keys.
 */
export async function s3TemporaryCredentials(s3: S3StoreOptions = {}, durationSeconds = 12 * 3600): Promise<S3TemporaryCredentials> {
  const client = new S3Client({ region: defaultRegion(s3), ...(s3.credentials ? { credentials: s3.credentials } : {}) });
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
  const sts = new STSClient({ region: defaultRegion(s3), credentials: own, ...(endpoint ? { endpoint } : {}) });
  try {
    const r = await sts.send(new GetSessionTokenCommand({ DurationSeconds: durationSeconds }));
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
