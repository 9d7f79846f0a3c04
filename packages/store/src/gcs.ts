// ObjectStore on Google Cloud Storage with @google-cloud/storage. Client side only (the agent reads through grants).
//
// GCS has no server-side copy of a byte range: its only way to build an object from stored data is `compose`,
// which concatenates whole objects. So a large object skysync writes is composed from pieces (about 8 MiB each,
// at most 128) kept under `<reserved>/pieces/<hash of the key>/`, and the object's metadata lists them. When the object changes,
// every old piece that lies entirely inside an unchanged range is composed again and only the rest is uploaded.
// The cost is storage: such an object is held twice (itself and its pieces). Small objects are plain uploads.

import { createHash, randomUUID } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { type File, Storage, type StorageOptions } from '@google-cloud/storage';
import { gcsEndpoint } from './endpoints.js';
import { type ErrorContext, StoreError, networkCode, storeError } from './errors.js';
import type { ReadGrant } from './grant.js';
import type { GrantOptions, ListOptions, ObjectInfo, ObjectPart, ObjectStore, PutOptions, PutResult } from './object-store.js';
import { MiB, type SendPiece, boundedPieces, partSize, readPieces, totalSize } from './parts.js';
import { type StoreUri, formatStoreUri } from './uri.js';
import { mapLimit, storeTimeoutMs } from './util.js';

export interface GcsStoreOptions {
  /** A GCS-compatible endpoint (`http://127.0.0.1:4443`); default SKYSYNC_GCS_ENDPOINT, then Google's. */
  apiEndpoint?: string;
  projectId?: string;
  /** Passed to the SDK as they are (keyFilename, credentials, authClient...). */
  storageOptions?: StorageOptions;
  /** Attempts per request (default 3). */
  maxAttempts?: number;
  concurrency?: number;
  reservedPrefix?: string;
  /**
   * How read grants are made: `token` (default) a short-lived OAuth access token from the client's credentials,
   * sent as a bearer header; `signed-url` a V4 signed URL, which needs credentials with a private key.
   */
  grant?: 'token' | 'signed-url';
  /** Where access tokens come from (default the SDK's credentials); tests against an emulator give their own. */
  accessToken?: () => Promise<{ token: string; expiresAtMs: number }>;
}

const GOOGLE_ENDPOINT = 'https://storage.googleapis.com';
const SINGLE_PUT_LIMIT = 16 * MiB;
const MAX_PIECES = 128;
const COMPOSE_LIMIT = 32;
const PIECES_KEY = 'skysync-pieces';

export { gcsEndpoint };

interface Piece {
  /** Name under the pieces prefix. */
  name: string;
  size: number;
}

/** A source of the composed object: a piece already stored, or new data to store as a piece first. */
type Source = { kind: 'stored'; piece: Piece } | { kind: 'new'; name: string; pieces: SendPiece[]; size: number };

/** Each object's pieces are in a folder of its own, so removing or rewriting it never touches another's. */
function pieceDir(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 24);
}

function newPieceName(key: string): string {
  return `${pieceDir(key)}/${randomUUID().slice(0, 13)}`;
}

interface ObjectResource {
  name?: string;
  size?: string | number;
  generation?: string | number;
  updated?: string;
  metadata?: Record<string, string | null | undefined> | null;
}

export class GcsObjectStore implements ObjectStore {
  readonly storage: Storage;
  private readonly endpoint: string | undefined;
  private readonly options: GcsStoreOptions;
  private readonly reservedPrefix: string;

  constructor(
    readonly uri: StoreUri,
    options: GcsStoreOptions = {},
  ) {
    this.options = options;
    this.endpoint = gcsEndpoint(options);
    this.reservedPrefix = options.reservedPrefix ?? '.skysync/';
    this.storage = new Storage({
      ...options.storageOptions,
      ...(this.endpoint ? { apiEndpoint: this.endpoint } : {}),
      ...(options.projectId ? { projectId: options.projectId } : {}),
      // The SDK has no limit by default, so an endpoint that never answers hangs a launch. Its limit is on a whole
      // request, not on idle time: five times the idle limit, so that a 16 MiB upload on a slow link still fits.
      timeout: 5 * storeTimeoutMs(),
      // The SDK reads `maxRetries: 0` as "the default" (3): one attempt has to be said as no retries at all.
      retryOptions: (options.maxAttempts ?? 3) <= 1 ? { autoRetry: false } : { maxRetries: (options.maxAttempts ?? 3) - 1 },
    });
  }

  private get bucket() {
    return this.storage.bucket(this.uri.bucket);
  }

  private get piecesPrefix(): string {
    return `${this.reservedPrefix}pieces/`;
  }

  private context(key?: string): ErrorContext {
    const bucketUri = formatStoreUri({ ...this.uri, prefix: '' });
    return {
      where: key === undefined ? bucketUri : `${bucketUri}/${key}`,
      bucket: bucketUri,
      endpoint: this.endpoint ?? GOOGLE_ENDPOINT,
      debugCommand: `gcloud storage ls ${bucketUri}`,
      endpointSetting: 'SKYSYNC_GCS_ENDPOINT',
    };
  }

  private fail(error: unknown, operation: string, key?: string): StoreError {
    if (error instanceof StoreError) return error;
    const code = (error as { code?: unknown }).code;
    return storeError({ status: typeof code === 'number' ? code : undefined, networkCode: networkCode(error) }, this.context(key), operation);
  }

  private async call<T>(operation: string, key: string | undefined, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw this.fail(error, operation, key);
    }
  }

  private info(resource: ObjectResource, key: string): ObjectInfo {
    return { key, size: Number(resource.size ?? 0), etag: String(resource.generation ?? ''), mtimeMs: resource.updated ? Date.parse(resource.updated) : 0 };
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const hideReserved = !prefix.startsWith(this.reservedPrefix);
    let pageToken: string | undefined;
    do {
      const [files, next] = await this.call('list', prefix, () =>
        this.bucket.getFiles({
          prefix,
          maxResults: options.pageSize ?? 1000,
          autoPaginate: false,
          ...(pageToken ? { pageToken } : {}),
          ...(options.after ? { startOffset: options.after } : {}),
        }),
      );
      for (const file of files) {
        if (file.name === options.after || (hideReserved && file.name.startsWith(this.reservedPrefix))) continue;
        yield this.info(file.metadata as ObjectResource, file.name);
      }
      pageToken = (next as { pageToken?: string } | null)?.pageToken;
    } while (pageToken);
  }

  private async resource(key: string): Promise<ObjectResource | null> {
    try {
      const [metadata] = await this.bucket.file(key).getMetadata();
      return metadata as ObjectResource;
    } catch (error) {
      const failure = this.fail(error, 'head', key);
      if (failure.kind === 'missing-object') return null;
      throw failure;
    }
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const resource = await this.resource(key);
    return resource ? this.info(resource, key) : null;
  }

  private file(key: string, generation?: string): File {
    return this.bucket.file(key, generation ? { generation: Number(generation) } : {});
  }

  async read(key: string, range?: { start: number; end: number }): Promise<NodeJS.ReadableStream> {
    // Ranged reads cannot be checked against the object's CRC; whole reads are.
    const source = this.file(key).createReadStream(range ? { start: range.start, end: range.end - 1, validation: false } : {});
    // The SDK reports failures on the stream: they reach the reader as StoreErrors, as every other failure does.
    const out = new PassThrough();
    source.on('error', (error) => out.destroy(this.fail(error, 'read', key)));
    return source.pipe(out);
  }

  async getRange(key: string, start: number, end: number, generation?: string): Promise<Uint8Array> {
    if (end <= start) return new Uint8Array(0);
    const [bytes] = await this.call('read', key, () => this.file(key, generation).download({ start, end: end - 1, validation: false }));
    if (bytes.length !== end - start) throw new StoreError('failed', `${this.context(key).where}: read ${bytes.length} bytes of range ${start}-${end}`);
    return bytes;
  }

  private generationMatch(options: PutOptions): number | undefined {
    const condition = options.condition;
    if (!condition) return undefined;
    return 'ifAbsent' in condition ? 0 : Number(condition.ifMatch);
  }

  async put(key: string, parts: readonly ObjectPart[], options: PutOptions = {}): Promise<PutResult> {
    const size = totalSize(parts);
    if (size <= SINGLE_PUT_LIMIT && parts.every((part) => part.kind !== 'copy')) {
      const body = await readPieces(parts, this.readStored);
      const ifGenerationMatch = this.generationMatch(options);
      const file = this.bucket.file(key);
      await this.call('put', key, () =>
        file.save(Buffer.from(body.buffer, body.byteOffset, body.length), {
          resumable: false,
          ...(ifGenerationMatch !== undefined ? { preconditionOpts: { ifGenerationMatch } } : {}),
        }),
      );
      return { info: this.info(file.metadata as ObjectResource, key), bytesSent: body.length, bytesCopied: 0 };
    }
    return this.putComposed(key, parts, options);
  }

  private readStored = (key: string, start: number, end: number, etag?: string): Promise<Uint8Array> => this.getRange(key, start, end, etag);

  /** The pieces an object skysync composed is made of, with their offsets; null for any other object. */
  private piecesOf(resource: ObjectResource | null): Array<Piece & { start: number }> | null {
    const listed = resource?.metadata?.[PIECES_KEY];
    if (!listed) return null;
    let start = 0;
    const pieces = listed.split(',').map((entry) => {
      const colon = entry.lastIndexOf(':');
      const piece = { name: entry.slice(0, colon), size: Number(entry.slice(colon + 1)), start };
      start += piece.size;
      return piece;
    });
    return start === Number(resource?.size) ? pieces : null;
  }

  /** Which stored pieces the parts can reuse and which new pieces they need. */
  private async planSources(key: string, parts: readonly ObjectPart[], target: number, reuse: boolean): Promise<Source[]> {
    const sources: Source[] = [];
    let pending: SendPiece[] = [];
    let pendingSize = 0;
    const flush = (): void => {
      if (pendingSize > 0) sources.push({ kind: 'new', name: newPieceName(key), pieces: pending, size: pendingSize });
      pending = [];
      pendingSize = 0;
    };
    const addSend = (part: ObjectPart): void => {
      for (const piece of boundedPieces([part], target)) {
        pending.push(piece);
        pendingSize += partSize(piece);
        if (pendingSize >= target) flush();
      }
    };
    const layouts = new Map<string, Array<Piece & { start: number }> | null>();
    for (const part of parts) {
      if (part.kind !== 'copy' || !reuse) {
        addSend(part);
        continue;
      }
      if (!layouts.has(part.key)) {
        const resource = await this.resource(part.key);
        const current = resource && (!part.etag || String(resource.generation) === part.etag);
        layouts.set(part.key, current ? this.piecesOf(resource) : null);
      }
      let cursor = part.start;
      for (const piece of layouts.get(part.key) ?? []) {
        if (piece.start < cursor || piece.start + piece.size > part.end) continue;
        if (cursor < piece.start) addSend({ ...part, start: cursor, end: piece.start });
        flush();
        sources.push({ kind: 'stored', piece });
        cursor = piece.start + piece.size;
      }
      if (cursor < part.end) addSend({ ...part, start: cursor, end: part.end });
    }
    flush();
    return sources;
  }

  private async putComposed(key: string, parts: readonly ObjectPart[], options: PutOptions): Promise<PutResult> {
    const size = totalSize(parts);
    const previous = await this.resource(key);
    const target = Math.max(8 * MiB, Math.ceil(size / (MAX_PIECES / 2)));
    let sources = await this.planSources(key, parts, target, true);
    // Edits leave smaller pieces behind; past the limit (the list has to fit in the object's metadata) start afresh.
    if (sources.length > MAX_PIECES) sources = await this.planSources(key, parts, target, false);
    let bytesSent = 0;
    let bytesCopied = 0;
    const created: string[] = [];
    const ownDir = `${pieceDir(key)}/`;
    let resource: ObjectResource;
    let pieces: Piece[];
    try {
      pieces = await mapLimit(sources, this.options.concurrency ?? 8, async (source): Promise<Piece> => {
        if (source.kind === 'stored') {
          bytesCopied += source.piece.size;
          if (source.piece.name.startsWith(ownDir)) return source.piece;
          // Another object's piece: copied inside the bucket, so each object owns every piece it lists.
          const name = newPieceName(key);
          created.push(this.piecesPrefix + name);
          await this.call('copy piece', key, () => this.bucket.file(this.piecesPrefix + source.piece.name).copy(this.bucket.file(this.piecesPrefix + name)));
          return { name, size: source.piece.size };
        }
        const body = await readPieces(source.pieces, this.readStored);
        bytesSent += body.length;
        created.push(this.piecesPrefix + source.name);
        await this.call('upload piece', key, () =>
          this.bucket.file(this.piecesPrefix + source.name).save(Buffer.from(body.buffer, body.byteOffset, body.length), { resumable: false }),
        );
        return { name: source.name, size: body.length };
      });
      const manifest = pieces.map((piece) => `${piece.name}:${piece.size}`).join(',');
      resource = await this.composeAll(
        key,
        pieces.map((piece) => this.piecesPrefix + piece.name),
        { [PIECES_KEY]: manifest },
        this.generationMatch(options),
      );
    } catch (error) {
      await this.removeObjects(created).catch(() => undefined);
      throw error;
    }
    const kept = new Set(pieces.map((piece) => piece.name));
    const orphaned = (this.piecesOf(previous) ?? []).filter((piece) => !kept.has(piece.name)).map((piece) => this.piecesPrefix + piece.name);
    await this.removeObjects(orphaned).catch(() => undefined);
    return { info: this.info(resource, key), bytesSent, bytesCopied };
  }

  /** Composes `names` into `key`, in rounds of 32 through temporary objects when there are more. */
  private async composeAll(key: string, names: string[], metadata: Record<string, string>, ifGenerationMatch: number | undefined): Promise<ObjectResource> {
    const temporary: string[] = [];
    try {
      let level = names;
      while (level.length > COMPOSE_LIMIT) {
        const groups: string[][] = [];
        for (let i = 0; i < level.length; i += COMPOSE_LIMIT) groups.push(level.slice(i, i + COMPOSE_LIMIT));
        level = await mapLimit(groups, 4, async (group) => {
          const name = `${this.reservedPrefix}tmp/${randomUUID()}`;
          temporary.push(name);
          await this.compose(name, group, {}, undefined);
          return name;
        });
      }
      return await this.compose(key, level, metadata, ifGenerationMatch);
    } finally {
      if (temporary.length > 0) await this.removeObjects(temporary).catch(() => undefined);
    }
  }

  private compose(key: string, sources: string[], metadata: Record<string, string>, ifGenerationMatch: number | undefined): Promise<ObjectResource> {
    const file = this.bucket.file(key);
    return this.call(
      'compose',
      key,
      () =>
        new Promise<ObjectResource>((resolve, reject) => {
          file.request(
            {
              method: 'POST',
              uri: '/compose',
              json: { destination: { contentType: 'application/octet-stream', metadata }, sourceObjects: sources.map((name) => ({ name })) },
              qs: ifGenerationMatch !== undefined ? { ifGenerationMatch } : {},
            },
            (error: Error | null, body: unknown) => (error ? reject(error) : resolve(body as ObjectResource)),
          );
        }),
    );
  }

  async remove(keys: readonly string[]): Promise<void> {
    await this.removeObjects(keys);
    const owners = keys.filter((key) => !key.startsWith(this.reservedPrefix));
    if (owners.length === 0 || !(await this.holdsPieces())) return;
    // The removed objects' pieces: one listing per object, only in a bucket where skysync composed anything.
    await mapLimit(owners, this.options.concurrency ?? 8, async (key) => {
      const pieces: string[] = [];
      for await (const info of this.list(`${this.piecesPrefix}${pieceDir(key)}/`)) pieces.push(info.key);
      await this.removeObjects(pieces);
    });
  }

  private async holdsPieces(): Promise<boolean> {
    const [files] = await this.call('list', this.piecesPrefix, () => this.bucket.getFiles({ prefix: this.piecesPrefix, maxResults: 1, autoPaginate: false }));
    return files.length > 0;
  }

  private async removeObjects(keys: readonly string[]): Promise<void> {
    await mapLimit(keys, this.options.concurrency ?? 8, async (key) => {
      try {
        await this.bucket.file(key).delete();
      } catch (error) {
        const failure = this.fail(error, 'delete', key);
        if (failure.kind !== 'missing-object') throw failure;
      }
    });
  }

  async deleteBucket(): Promise<void> {
    await this.call('bucket delete', undefined, () => this.bucket.delete());
  }

  async checkBucket(): Promise<void> {
    await this.call('bucket check', undefined, () => this.bucket.getMetadata());
  }

  async createBucket(options: { region?: string } = {}): Promise<'created' | 'exists'> {
    try {
      await this.storage.createBucket(this.uri.bucket, { storageClass: 'STANDARD', ...(options.region ? { location: options.region } : {}) });
      return 'created';
    } catch (error) {
      if ((error as { code?: unknown }).code === 409) {
        await this.checkBucket();
        return 'exists';
      }
      throw this.fail(error, 'bucket create');
    }
  }

  async readGrant(key: string, options: GrantOptions = {}): Promise<ReadGrant> {
    const info = options.known ?? (await this.head(key));
    if (!info) throw new StoreError('missing-object', `${this.context(key).where}: no such object to grant a read of`);
    const expiresIn = options.expiresInSeconds ?? 3600;
    const base = { uri: this.context(key).where, size: info.size, etag: info.etag, versionHeader: 'x-goog-generation' as const };
    if (this.options.grant === 'signed-url') {
      const expires = Date.now() + expiresIn * 1000;
      const [url] = await this.call('grant', key, () => this.file(key).getSignedUrl({ version: 'v4', action: 'read', expires, queryParams: { generation: info.etag } }));
      return { ...base, url, headers: {}, expiresAtMs: expires };
    }
    const { token, expiresAtMs } = await this.call('grant', key, () => (this.options.accessToken ?? (() => this.sdkAccessToken()))());
    // The JSON API's media download, pinned to the generation seen here: a newer version is a 404, never mixed in.
    const url = `${(this.endpoint ?? GOOGLE_ENDPOINT).replace(/\/+$/, '')}/storage/v1/b/${encodeURIComponent(this.uri.bucket)}/o/${encodeURIComponent(key)}?alt=media&generation=${info.etag}`;
    return { ...base, url, headers: { authorization: `Bearer ${token}` }, expiresAtMs: Math.min(expiresAtMs, Date.now() + expiresIn * 1000) };
  }

  /** A short-lived OAuth access token from the client's credentials (what grants and mounts carry). */
  accessToken(): Promise<{ token: string; expiresAtMs: number }> {
    return this.call('token', undefined, () => (this.options.accessToken ?? (() => this.sdkAccessToken()))());
  }

  private async sdkAccessToken(): Promise<{ token: string; expiresAtMs: number }> {
    const client = await this.storage.authClient.getClient();
    const { token } = await client.getAccessToken();
    if (!token) throw new StoreError('denied', `${this.context().where}: the credentials give no access token; run \`gcloud auth application-default login\``);
    const expiry = (client as { credentials?: { expiry_date?: number | null } }).credentials?.expiry_date;
    return { token, expiresAtMs: expiry ?? Date.now() + 30 * 60 * 1000 };
  }
}

/** A short-lived OAuth access token from the client's credentials (about an hour), for a node's FUSE mount. */
export function gcsAccessToken(uri: StoreUri, options: GcsStoreOptions = {}): Promise<{ token: string; expiresAtMs: number }> {
  return new GcsObjectStore(uri, options).accessToken();
}
