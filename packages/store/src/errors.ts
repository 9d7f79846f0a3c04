// Store errors as the user reads them: one line naming the bucket (and key) and what to do, never an SDK stack.
// The kinds let callers decide (a missing object is null, not an error; a precondition is a lost race).

export type StoreErrorKind = 'missing-bucket' | 'denied' | 'unreachable' | 'precondition' | 'missing-object' | 'failed';

/** The CLI loads the SDK side (`@skysync/store/cloud`) from a bundle of its own, which holds its own copy of this
 * class: `instanceof` goes by this brand, so an error thrown there is still a StoreError here. */
const STORE_ERROR = Symbol.for('skysync.StoreError');

export class StoreError extends Error {
  readonly [STORE_ERROR] = true;

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[STORE_ERROR] === true;
  }

  constructor(
    readonly kind: StoreErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'StoreError';
  }
}

/** What an SDK error says, whatever the SDK: HTTP status, a code name, the network error's code. */
export interface ErrorFacts {
  status?: number;
  code?: string;
  networkCode?: string;
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

/** Finds a network error code in an error or its causes (fetch, gaxios and the AWS SDK each nest them differently). */
export function networkCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current && typeof current === 'object'; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return code;
    // The AWS SDK's idle-socket timeout has a name and no code; gaxios's (node-fetch) a type.
    if ((current as { name?: unknown }).name === 'TimeoutError' || (current as { type?: unknown }).type === 'request-timeout') return 'ETIMEDOUT';
    const errors = (current as { errors?: unknown }).errors;
    if (Array.isArray(errors) && errors.length > 0) current = errors[0];
    else current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

export interface ErrorContext {
  /** `s3://bucket` or `gs://bucket/key`. */
  where: string;
  /** `s3://bucket`: what a bucket-level error names. */
  bucket: string;
  endpoint: string;
  /** The command a user runs to look for themselves (`aws s3 ls s3://b`). */
  debugCommand: string;
  /** How the endpoint is chosen (`AWS_ENDPOINT_URL`, `SKYSYNC_GCS_ENDPOINT`). */
  endpointSetting: string;
}

// Operations whose 404 can only mean the bucket: they name no existing object (GCS's 404s carry no code to tell).
const BUCKET_OPERATIONS = new Set(['bucket check', 'list', 'put', 'upload part', 'upload piece', 'bucket create', 'bucket delete']);

/** Turns an SDK failure into a one-line StoreError. `operation` says what was being done (`list`, `put`). */
export function storeError(facts: ErrorFacts, context: ErrorContext, operation: string): StoreError {
  const { where } = context;
  if (facts.networkCode) {
    return new StoreError(
      'unreachable',
      `${where}: the endpoint ${context.endpoint} does not answer (${facts.networkCode}) during ${operation}; check the network or ${context.endpointSetting}`,
    );
  }
  if (facts.code === 'NoSuchBucket' || (facts.status === 404 && (facts.code === 'NotFound' || facts.code === undefined) && BUCKET_OPERATIONS.has(operation))) {
    return new StoreError('missing-bucket', `${context.bucket}: the bucket does not exist; create it or fix the name (to debug: ${context.debugCommand})`);
  }
  if (facts.status === 403 || facts.code === 'AccessDenied' || facts.code === 'Forbidden') {
    return new StoreError('denied', `${where}: access denied during ${operation}; check the credentials and the bucket's policy (to debug: ${context.debugCommand})`);
  }
  if (facts.status === 401) {
    return new StoreError('denied', `${where}: not authenticated during ${operation}; check the credentials (to debug: ${context.debugCommand})`);
  }
  if (facts.status === 412 || facts.code === 'PreconditionFailed' || facts.code === 'ConditionalRequestConflict') {
    return new StoreError('precondition', `${where}: changed by another writer during ${operation}`);
  }
  if (facts.status === 404 || facts.code === 'NoSuchKey') {
    return new StoreError('missing-object', `${where}: no such object during ${operation}`);
  }
  const detail = [facts.status ? `HTTP ${facts.status}` : '', facts.code ?? ''].filter(Boolean).join(' ');
  return new StoreError('failed', `${where}: ${operation} failed${detail ? ` (${detail})` : ''}; to debug: ${context.debugCommand}`);
}
