// Read grants: how a node reads one object without an SDK and without any secret on its disk. The client, which
// holds the user's credentials, makes them (s3.ts: a presigned GET URL; gcs.ts: a short-lived OAuth access token
// sent as a bearer header, or a V4 signed URL where the credentials carry a private key) and sends them to the
// agent, which keeps them in memory only. This file imports nothing but Node's own `fetch`, so the agent's
// bundle can carry it.

/** Everything a node needs to read one object version, for a limited time. */
export interface ReadGrant {
  /** `s3://bucket/key` or `gs://bucket/key`, for messages. */
  uri: string;
  url: string;
  /** Extra request headers (a bearer token for GCS); sent as they are, never logged. */
  headers: Record<string, string>;
  expiresAtMs: number;
  /** The object's size and version when the grant was made: every response is checked against them. */
  size: number;
  etag: string;
  /** The response header that carries the version: S3's `etag`, GCS's `x-goog-generation`. */
  versionHeader: 'etag' | 'x-goog-generation';
}

export type GrantErrorKind = 'expired' | 'denied' | 'changed' | 'missing' | 'short' | 'unreachable' | 'failed';

export class GrantError extends Error {
  constructor(
    readonly kind: GrantErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'GrantError';
  }
}

/** Strips the quotes S3 puts around ETags, so that versions compare as the store's own text. */
export function bareEtag(etag: string): string {
  return etag.replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

export interface FetchRange {
  start: number;
  /** Exclusive. */
  end: number;
}

/** The grant's text for messages: the object's URI, never the URL (a presigned URL is a credential while it lasts). */
function describe(grant: ReadGrant, range?: FetchRange): string {
  return range ? `${grant.uri} bytes ${range.start}-${range.end}` : grant.uri;
}

async function request(grant: ReadGrant, range: FetchRange | undefined, signal: AbortSignal | undefined): Promise<Response> {
  if (Date.now() >= grant.expiresAtMs) throw new GrantError('expired', `${describe(grant, range)}: the read grant expired; the client has to issue a new one`);
  const headers: Record<string, string> = { ...grant.headers };
  if (range) headers.range = `bytes=${range.start}-${range.end - 1}`;
  let response: Response;
  try {
    response = await fetch(grant.url, { headers, signal, redirect: 'follow' });
  } catch (error) {
    if ((error as Error).name === 'AbortError') throw error;
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message;
    throw new GrantError('unreachable', `${describe(grant, range)}: the store does not answer (${cause})`);
  }
  if (response.status === 200 || response.status === 206) return response;
  await response.body?.cancel();
  const where = describe(grant, range);
  if (response.status === 403 || response.status === 401) {
    const kind = Date.now() >= grant.expiresAtMs ? 'expired' : 'denied';
    throw new GrantError(kind, `${where}: the store refused the read grant (HTTP ${response.status})`);
  }
  if (response.status === 404) throw new GrantError('missing', `${where}: the object is gone`);
  if (response.status === 412) throw new GrantError('changed', `${where}: the object changed since the grant was made`);
  throw new GrantError('failed', `${where}: HTTP ${response.status}`);
}

/** Checks status, version and length before a single body byte is used. */
function check(grant: ReadGrant, response: Response, range: FetchRange | undefined): number {
  const where = describe(grant, range);
  const version = response.headers.get(grant.versionHeader);
  if (version === null || bareEtag(version) !== bareEtag(grant.etag)) {
    throw new GrantError('changed', `${where}: the object changed since the grant was made (version ${version ?? 'missing'}, expected ${grant.etag})`);
  }
  const expected = range ? Math.min(range.end, grant.size) - range.start : grant.size;
  if (range && range.start >= grant.size) throw new GrantError('failed', `${where}: the range starts past the end (${grant.size} bytes)`);
  if (range && response.status !== 206 && !(range.start === 0 && range.end >= grant.size)) {
    throw new GrantError('failed', `${where}: the store ignored the range (HTTP ${response.status})`);
  }
  const length = response.headers.get('content-length');
  if (length !== null && Number(length) !== expected) throw new GrantError('short', `${where}: the store sends ${length} bytes, expected ${expected}`);
  return expected;
}

export interface FetchOptions {
  range?: FetchRange;
  signal?: AbortSignal;
}

/**
 * Streams the object (or a range) through the grant, giving each chunk to `onChunk` in order; resolves with the
 * byte count once every byte came and the count is the expected one. The version is checked before the first
 * chunk, so a changed object is refused before anything is written.
 */
export async function streamObject(grant: ReadGrant, onChunk: (chunk: Uint8Array) => void | Promise<void>, options: FetchOptions = {}): Promise<number> {
  const response = await request(grant, options.range, options.signal);
  let expected: number;
  try {
    expected = check(grant, response, options.range);
  } catch (error) {
    await response.body?.cancel();
    throw error;
  }
  let received = 0;
  if (response.body) {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      received += chunk.length;
      if (received > expected) throw new GrantError('short', `${describe(grant, options.range)}: the store sends more than ${expected} bytes`);
      await onChunk(chunk);
    }
  }
  if (received !== expected) throw new GrantError('short', `${describe(grant, options.range)}: the store sent ${received} of ${expected} bytes`);
  return received;
}

/** The object (or a range) through the grant, in memory, with its length and version checked. */
export async function fetchObject(grant: ReadGrant, options: FetchOptions = {}): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const total = await streamObject(grant, (chunk) => void chunks.push(chunk), options);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
