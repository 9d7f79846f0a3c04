// presign.ts signs S3 GET URLs itself (the SDK's getSignedUrl costs a millisecond of CPU per URL). It must make
// exactly the SDK's URL: the same path encoding, query and signature, for any key, endpoint, region and
// credentials. Compared here with the SDK on seeded random keys (no server needed: signing is offline), then
// read through moto with keys that need encoding.
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { describe, expect, it } from 'vitest';
import { PROBE_KEY, learnShape, presignGet, sameUrl } from '../src/presign.js';
import { Rng, seedFromEnv } from '../../../test/helpers/random.js';
import { fetchObject } from '../src/grant.js';
import { freshStore, objectServers, skipReason } from './helpers/servers.js';

const seed = seedFromEnv();
const PIECES = [
  'a',
  'Z',
  '0',
  ' ',
  '+',
  '!',
  "'",
  '(',
  ')',
  '*',
  '~',
  '_',
  '-',
  '.',
  '%',
  '=',
  '&',
  '?',
  ';',
  ':',
  '@',
  ',',
  '$',
  '[',
  ']',
  '#',
  '^',
  '{',
  '}',
  '|',
  '\\',
  '"',
  '<',
  '>',
  '`',
  'é',
  'ß',
  '中',
  '😀',
  '/',
  '//',
  '\t',
];

function randomKey(rng: Rng): string {
  const n = 1 + rng.int(24);
  let key = '';
  for (let i = 0; i < n; i++) key += rng.pick(PIECES);
  return key;
}

const setups: Array<{ name: string; endpoint?: string; region: string; bucket: string; sessionToken?: string }> = [
  { name: 'an S3-compatible endpoint (path style)', endpoint: 'http://127.0.0.1:9000', region: 'us-east-1', bucket: 'data' },
  { name: 'AWS, virtual-hosted', region: 'eu-west-1', bucket: 'my-bucket' },
  { name: 'AWS, a dotted bucket (path style)', region: 'us-west-2', bucket: 'my.dotted.bucket' },
  { name: 'AWS, temporary credentials', region: 'us-east-1', bucket: 'b1', sessionToken: 'FwoGZXIvYXdzE+/token=' },
];

describe('presigned URLs made here are the SDK own', () => {
  it.each(setups)('$name', async ({ endpoint, region, bucket, sessionToken }) => {
    console.log(`presign seed ${seed} (SKYSYNC_SEED replays it)`);
    const credentials = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', ...(sessionToken ? { sessionToken } : {}) };
    const client = new S3Client({ region, credentials, ...(endpoint ? { endpoint, forcePathStyle: true } : {}) });
    const now = new Date('2026-03-04T05:06:07Z');
    const sdk = (key: string, expiresIn: number, date = now): Promise<string> =>
      getSignedUrl(client, new GetObjectCommand({ Bucket: bucket, Key: key }), { expiresIn, signingDate: date });
    const shape = learnShape(await sdk(PROBE_KEY, 3600), PROBE_KEY);
    expect(shape).not.toBeNull();
    const rng = new Rng(seed);
    for (let i = 0; i < 200; i++) {
      const key = randomKey(rng);
      const expiresIn = 1 + rng.int(7 * 24 * 3600);
      const date = new Date(now.getTime() + rng.int(3 * 24 * 3600) * 1000);
      const mine = presignGet(shape!, credentials, key, expiresIn, date);
      const theirs = await sdk(key, expiresIn, date);
      if (!sameUrl(mine, theirs)) expect({ key, mine }).toEqual({ key, mine: theirs });
    }
  });

  it('a URL whose path does not end in the key is not a shape to learn', () => {
    expect(learnShape('http://h/b/other?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a/20260101/r/s3/aws4_request', 'key')).toBeNull();
    expect(learnShape('http://h/b/key?X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256&X-Amz-Credential=a/20260101/r/s3/aws4_request', 'key')).toBeNull();
  });
});

const servers = objectServers();

describe.skipIf(skipReason)('grants signed here, read from moto', () => {
  it('reads objects whose keys need encoding', async () => {
    const store = await freshStore(servers(), 's3');
    const keys = ['a b/c+d', 'é/中/😀', "x!'()*~", 'p%20q', 'semi;colon=eq&amp'];
    for (const key of keys) await store.put(key, [{ kind: 'bytes', data: Buffer.from(`body of ${key}`) }]);
    for (const key of keys) {
      const info = (await store.head(key))!;
      const grant = await store.readGrant(key, { known: info });
      expect(Buffer.from(await fetchObject(grant)).toString()).toBe(`body of ${key}`);
    }
  });
});
