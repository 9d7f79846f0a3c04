// Presigned GET URLs for many objects of one bucket, signed here (AWS Signature Version 4, query-string form)
// instead of through the SDK's getSignedUrl, whose middleware stack costs about a millisecond of CPU per URL: a
// fetch of 35k small objects would spend half a minute of the client's CPU on signing alone.
//
// What the URL looks like (endpoint, addressing style, signing region, extra query parameters the SDK adds) is
// learnt from the SDK itself: one URL for a probe key is made by getSignedUrl and by this signer with the same
// date, and this signer is used only when both are the same URL. Otherwise every URL comes from the SDK, as before.

import { createHash, createHmac } from 'node:crypto';

export interface SigningCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** A key with the characters whose encoding differs between schemes: if this one matches, the others do. */
export const PROBE_KEY = ".skysync/probe/a b+c!'()*~_-.%é😀/=&?;:@,$[]";

/** RFC 3986 unreserved characters stay; everything else is %XX of its UTF-8 bytes (what SigV4 canonicalises to). */
function encode(s: string, keepSlash: boolean): string {
  const out = encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return keepSlash ? out.replace(/%2F/g, '/') : out;
}

function amzDate(d: Date): string {
  return d
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
}

export interface UrlShape {
  /** Origin and the path before the key (`http://host:port/bucket/` or `https://bucket.s3.region.amazonaws.com/`). */
  base: URL;
  pathPrefix: string;
  region: string;
  service: string;
  /** Query parameters the SDK signs beside the auth ones (`x-id`, `x-amz-checksum-mode`). */
  extra: Array<[string, string]>;
}

/**
 * The shape of the SDK's URL for `key`, or null when it is not one this signer understands (then the SDK signs
 * every URL).
 */
export function learnShape(sdkUrl: string, key: string): UrlShape | null {
  const url = new URL(sdkUrl);
  const encodedKey = encode(key, true);
  if (!url.pathname.endsWith(encodedKey)) return null;
  const credential = url.searchParams.get('X-Amz-Credential')?.split('/');
  if (url.searchParams.get('X-Amz-Algorithm') !== 'AWS4-HMAC-SHA256' || !credential || credential.length !== 5) return null;
  const extra: Array<[string, string]> = [];
  for (const [k, v] of url.searchParams) if (!/^X-Amz-(Algorithm|Content-Sha256|Credential|Date|Expires|SignedHeaders|Signature|Security-Token)$/.test(k)) extra.push([k, v]);
  return {
    base: new URL(url.origin),
    pathPrefix: url.pathname.slice(0, url.pathname.length - encodedKey.length),
    region: credential[2]!,
    service: credential[3]!,
    extra,
  };
}

/** A presigned GET URL for `key` in the shape learnt, valid `expiresIn` seconds from `now`. */
export function presignGet(shape: UrlShape, credentials: SigningCredentials, key: string, expiresIn: number, now: Date): string {
  const date = amzDate(now);
  const day = date.slice(0, 8);
  const scope = `${day}/${shape.region}/${shape.service}/aws4_request`;
  const params: Array<[string, string]> = [
    ['X-Amz-Algorithm', 'AWS4-HMAC-SHA256'],
    ['X-Amz-Content-Sha256', 'UNSIGNED-PAYLOAD'],
    ['X-Amz-Credential', `${credentials.accessKeyId}/${scope}`],
    ['X-Amz-Date', date],
    ['X-Amz-Expires', String(expiresIn)],
    ...(credentials.sessionToken ? ([['X-Amz-Security-Token', credentials.sessionToken]] as Array<[string, string]>) : []),
    ['X-Amz-SignedHeaders', 'host'],
    ...shape.extra,
  ];
  const query = params
    .map(([k, v]) => [encode(k, false), encode(v, false)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const path = shape.pathPrefix + encode(key, true);
  const canonical = ['GET', path, query, `host:${shape.base.host}`, '', 'host', 'UNSIGNED-PAYLOAD'].join('\n');
  const toSign = ['AWS4-HMAC-SHA256', date, scope, createHash('sha256').update(canonical).digest('hex')].join('\n');
  const signature = createHmac('sha256', signingKey(credentials.secretAccessKey, day, shape.region, shape.service))
    .update(toSign)
    .digest('hex');
  return `${shape.base.origin}${path}?${query}&X-Amz-Signature=${signature}`;
}

let lastKey: { secret: string; scope: string; key: Buffer } | null = null;

/** The day's signing key (the same for every URL of a day and scope: made once, kept in this process only). */
function signingKey(secret: string, day: string, region: string, service: string): Buffer {
  const scope = `${day}/${region}/${service}`;
  if (lastKey?.secret !== secret || lastKey.scope !== scope) {
    const hmac = (key: string | Buffer, data: string): Buffer => createHmac('sha256', key).update(data).digest();
    lastKey = { secret, scope, key: hmac(hmac(hmac(hmac(`AWS4${secret}`, day), region), service), 'aws4_request') };
  }
  return lastKey.key;
}

/** Whether two presigned URLs are the same request with the same signature (parameter order aside). */
export function sameUrl(a: string, b: string): boolean {
  const ua = new URL(a);
  const ub = new URL(b);
  if (ua.origin !== ub.origin || ua.pathname !== ub.pathname) return false;
  const qa = [...ua.searchParams].map((p) => p.join('=')).sort();
  const qb = [...ub.searchParams].map((p) => p.join('=')).sort();
  return qa.length === qb.length && qa.every((x, i) => x === qb[i]);
}
