// Read grants: how a node reads one object without an SDK and without any secret on its disk. The client, which
// holds the user's credentials, makes them (s3.ts: a presigned GET URL; gcs.ts: a short-lived OAuth access token
// sent as a bearer header, or a V4 signed URL where the credentials carry a private key) and sends them to the
// agent, which keeps them in memory only. This file imports nothing but Node's own http and https, so the agent's
// bundle can carry it. Not `fetch`: its web streams cost a node fetching thousands of small objects about twice
// the CPU per request.

import http from 'node:http';
import https from 'node:https';

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

/** `unreachable`, `busy` (HTTP 5xx, 429) and `short` may pass: a reader tries again (from where it stopped). */
export type GrantErrorKind = 'expired' | 'denied' | 'changed' | 'missing' | 'short' | 'unreachable' | 'busy' | 'failed';

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

/** Connections kept open between reads (a store that allows it saves a TCP and TLS handshake per object). */
const AGENTS = {
  'http:': new http.Agent({ keepAlive: true, maxSockets: 64 }),
  'https:': new https.Agent({ keepAlive: true, maxSockets: 64 }),
};
const REDIRECTS = 5;

/** A read with no byte either way for this long is given up (a store that accepts and never answers). */
const IDLE_MS = 60_000;

function get(url: URL, headers: Record<string, string>, signal: AbortSignal | undefined, idleMs: number): Promise<http.IncomingMessage> {
  const agent = AGENTS[url.protocol as keyof typeof AGENTS];
  if (!agent) return Promise.reject(new Error(`unsupported protocol ${url.protocol}`));
  const lib = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.get(url, { agent, headers, ...(signal ? { signal } : {}) }, resolve);
    req.on('error', reject);
    // Idle time on the socket, while waiting for the answer and while reading its body alike.
    req.setTimeout(idleMs, () => req.destroy(Object.assign(new Error(`no data for ${idleMs / 1000} s`), { code: 'ETIMEDOUT' })));
  });
}

async function request(grant: ReadGrant, range: FetchRange | undefined, signal: AbortSignal | undefined, idleMs: number): Promise<http.IncomingMessage> {
  if (Date.now() >= grant.expiresAtMs) throw new GrantError('expired', `${describe(grant, range)}: the read grant expired; the client has to issue a new one`);
  const headers: Record<string, string> = { ...grant.headers };
  if (range) headers.range = `bytes=${range.start}-${range.end - 1}`;
  let url = new URL(grant.url);
  let response: http.IncomingMessage;
  for (let hops = 0; ; hops++) {
    try {
      response = await get(url, headers, signal, idleMs);
    } catch (error) {
      if ((error as Error).name === 'AbortError') throw error;
      const cause = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
      throw new GrantError('unreachable', `${describe(grant, range)}: the store does not answer (${cause})`);
    }
    const status = response.statusCode ?? 0;
    const location = response.headers.location;
    if (![301, 302, 303, 307, 308].includes(status) || !location || hops >= REDIRECTS) break;
    response.resume();
    url = new URL(location, url);
  }
  const status = response.statusCode ?? 0;
  if (status === 200 || status === 206) return response;
  response.resume();
  const where = describe(grant, range);
  if (status === 403 || status === 401) {
    const kind = Date.now() >= grant.expiresAtMs ? 'expired' : 'denied';
    throw new GrantError(kind, `${where}: the store refused the read grant (HTTP ${status})`);
  }
  if (status === 404) throw new GrantError('missing', `${where}: the object is gone`);
  if (status === 412) throw new GrantError('changed', `${where}: the object changed since the grant was made`);
  if (status >= 500 || status === 429) throw new GrantError('busy', `${where}: the store answers HTTP ${status}`);
  throw new GrantError('failed', `${where}: HTTP ${status}`);
}

/** Checks status, version and length before a single body byte is used. */
function check(grant: ReadGrant, response: http.IncomingMessage, range: FetchRange | undefined): number {
  const where = describe(grant, range);
  const header = response.headers[grant.versionHeader];
  const version = typeof header === 'string' ? header : null;
  if (version === null || bareEtag(version) !== bareEtag(grant.etag)) {
    throw new GrantError('changed', `${where}: the object changed since the grant was made (version ${version ?? 'missing'}, expected ${grant.etag})`);
  }
  const expected = range ? Math.min(range.end, grant.size) - range.start : grant.size;
  if (range && range.start >= grant.size) throw new GrantError('failed', `${where}: the range starts past the end (${grant.size} bytes)`);
  if (range && response.statusCode !== 206 && !(range.start === 0 && range.end >= grant.size)) {
    throw new GrantError('failed', `${where}: the store ignored the range (HTTP ${response.statusCode})`);
  }
  const length = response.headers['content-length'];
  if (length !== undefined && Number(length) !== expected) throw new GrantError('short', `${where}: the store sends ${length} bytes, expected ${expected}`);
  return expected;
}

export interface FetchOptions {
  range?: FetchRange;
  signal?: AbortSignal;
  /** Give up after this long without a byte (default 60 s). */
  idleMs?: number;
}

/**
 * Streams the object (or a range) through the grant, giving each chunk to `onChunk` in order; resolves with the
 * byte count once every byte came and the count is the expected one. The version is checked before the first
 * chunk, so a changed object is refused before anything is written.
 */
export async function streamObject(grant: ReadGrant, onChunk: (chunk: Uint8Array) => void | Promise<void>, options: FetchOptions = {}): Promise<number> {
  const response = await request(grant, options.range, options.signal, options.idleMs ?? IDLE_MS);
  let expected: number;
  try {
    expected = check(grant, response, options.range);
  } catch (error) {
    response.destroy();
    throw error;
  }
  let received = 0;
  const body = response[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const stop = (): void => void response.destroy();
  for (;;) {
    let next: IteratorResult<Buffer>;
    try {
      next = await body.next();
    } catch (error) {
      if ((error as Error).name === 'AbortError') throw error;
      const why = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
      throw new GrantError('unreachable', `${describe(grant, options.range)}: the connection broke after ${received} of ${expected} bytes (${why})`);
    }
    if (next.done) break;
    const chunk = next.value;
    received += chunk.length;
    if (received > expected) {
      stop();
      throw new GrantError('short', `${describe(grant, options.range)}: the store sends more than ${expected} bytes`);
    }
    try {
      await onChunk(chunk);
    } catch (error) {
      stop();
      throw error;
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
