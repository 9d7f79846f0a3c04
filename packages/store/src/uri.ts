// Bucket URIs as SkyPilot writes them in file_mounts and as users type them on the command line:
// `s3://bucket/prefix` and `gs://bucket/prefix`.

/** The object stores skysync knows how to name. */
export type StoreScheme = 's3' | 'gs';

const SCHEMES: readonly StoreScheme[] = ['s3', 'gs'];

/** One place in an object store: every object whose key starts with `prefix` in `bucket`. */
export interface StoreUri {
  scheme: StoreScheme;
  bucket: string;
  /** Key prefix without a leading `/`, as written otherwise (`''` for the whole bucket; a trailing `/` is kept). */
  prefix: string;
}

export class StoreUriError extends Error {
  constructor(
    readonly uri: string,
    problem: string,
  ) {
    super(`invalid bucket URI "${uri}": ${problem}`);
    this.name = 'StoreUriError';
  }
}

// S3: 3-63 characters, lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit.
// GCS allows underscores as well, and names of up to 222 characters when they contain dots (each dot-separated
// part at most 63).
const BUCKET_NAME: Record<StoreScheme, RegExp> = {
  s3: /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
  gs: /^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/,
};

function bucketProblem(scheme: StoreScheme, bucket: string): string | null {
  if (bucket === '') return 'no bucket name';
  if (!BUCKET_NAME[scheme].test(bucket)) return `"${bucket}" is not a valid ${scheme} bucket name`;
  if (bucket.includes('..')) return `"${bucket}" has two dots in a row`;
  if (scheme === 'gs' && !bucket.includes('.') && bucket.length > 63) return `"${bucket}" is longer than 63 characters`;
  if (scheme === 'gs' && bucket.split('.').some((part) => part.length > 63)) return `"${bucket}" has a part longer than 63 characters`;
  return null;
}

/** Whether `text` names a bucket (a scheme skysync knows), as opposed to a local path or an SSH target. */
export function isStoreUri(text: string): boolean {
  return SCHEMES.some((scheme) => text.startsWith(`${scheme}://`));
}

/** Parses `s3://bucket/prefix` or `gs://bucket/prefix`; throws StoreUriError naming the URI and the problem. */
export function parseStoreUri(text: string): StoreUri {
  const match = /^([a-z0-9]+):\/\/([^/]*)(?:\/(.*))?$/s.exec(text);
  if (!match) throw new StoreUriError(text, 'expected s3://BUCKET/PREFIX or gs://BUCKET/PREFIX');
  const [, scheme = '', bucket = '', prefix = ''] = match;
  if (!SCHEMES.includes(scheme as StoreScheme)) throw new StoreUriError(text, `unsupported scheme "${scheme}://" (supported: ${SCHEMES.map((s) => `${s}://`).join(', ')})`);
  const problem = bucketProblem(scheme as StoreScheme, bucket);
  if (problem) throw new StoreUriError(text, problem);
  return { scheme: scheme as StoreScheme, bucket, prefix: prefix.replace(/^\/+/, '') };
}

/** The URI `parseStoreUri` reads back as `uri`. */
export function formatStoreUri(uri: StoreUri): string {
  return `${uri.scheme}://${uri.bucket}${uri.prefix === '' ? '' : `/${uri.prefix}`}`;
}
