// What users see when a bucket cannot be used: one line naming the bucket and what to do, no stack, a kind the
// caller can act on. Against the real servers, and an endpoint where nothing listens.
import net from 'node:net';
import { StoreError } from '@skysync/store';
import { describe, expect, it } from 'vitest';
import { gcsStore, objectServers, s3Store, skipReason } from './helpers/servers.js';

const servers = objectServers();

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function failure(attempt: Promise<unknown> | (() => Promise<unknown>)): Promise<StoreError> {
  try {
    await (typeof attempt === 'function' ? attempt() : attempt);
  } catch (error) {
    expect(error).toBeInstanceOf(StoreError);
    const message = (error as StoreError).message;
    expect(message).not.toContain('\n');
    expect(message).not.toMatch(/\bat .*:\d+:\d+/);
    return error as StoreError;
  }
  throw new Error('expected a StoreError');
}

describe.skipIf(skipReason)('bucket errors', () => {
  it('a missing bucket: checkBucket, list and put name it and say what to do', async () => {
    const s3 = s3Store(servers(), 'no-such-bucket');
    const gcs = gcsStore(servers(), 'no-such-bucket');
    for (const [store, scheme] of [
      [s3, 's3'],
      [gcs, 'gs'],
    ] as const) {
      const attempts = [
        () => store.checkBucket(),
        async () => {
          for await (const _ of store.list('x/')) break;
        },
        () => store.put('k', [{ kind: 'bytes', data: Buffer.from('k') }]),
      ];
      for (const attempt of attempts) {
        const error = await failure(attempt);
        expect(error.kind).toBe('missing-bucket');
        expect(error.message).toMatch(new RegExp(`^${scheme}://no-such-bucket: the bucket does not exist; create it or fix the name \\(to debug: `));
      }
    }
    expect((await failure(s3.checkBucket())).message).toContain(`aws s3 ls s3://no-such-bucket --endpoint-url ${servers().s3.endpoint}`);
    expect(await s3.head('k')).toBeNull();
  });

  it('an endpoint that does not answer: unreachable, naming the endpoint and the setting', async () => {
    const port = await closedPort();
    const endpoint = `http://127.0.0.1:${port}`;
    const s3 = s3Store(servers(), 'some-bucket', { endpoint, maxAttempts: 1 });
    const gcs = gcsStore(servers(), 'some-bucket', { apiEndpoint: endpoint, maxAttempts: 1 });
    const s3Error = await failure(s3.checkBucket());
    expect(s3Error.kind).toBe('unreachable');
    expect(s3Error.message).toBe(`s3://some-bucket: the endpoint ${endpoint} does not answer (ECONNREFUSED) during bucket check; check the network or AWS_ENDPOINT_URL`);
    const gcsError = await failure(gcs.checkBucket());
    expect(gcsError.kind).toBe('unreachable');
    expect(gcsError.message).toBe(`gs://some-bucket: the endpoint ${endpoint} does not answer (ECONNREFUSED) during bucket check; check the network or SKYSYNC_GCS_ENDPOINT`);
  });

  it('takes the S3 endpoint from AWS_ENDPOINT_URL and the GCS one from SKYSYNC_GCS_ENDPOINT', async () => {
    const saved = { aws: process.env.AWS_ENDPOINT_URL, gcs: process.env.SKYSYNC_GCS_ENDPOINT };
    try {
      process.env.AWS_ENDPOINT_URL = servers().s3.endpoint;
      process.env.SKYSYNC_GCS_ENDPOINT = servers().gcs.endpoint;
      const s3 = s3Store(servers(), 'env-bucket', { endpoint: undefined });
      const gcs = gcsStore(servers(), 'env-bucket', { apiEndpoint: undefined });
      await expect(s3.createBucket()).resolves.toBe('created');
      await expect(gcs.createBucket()).resolves.toBe('created');
      await expect(s3.checkBucket()).resolves.toBeUndefined();
      await expect(gcs.checkBucket()).resolves.toBeUndefined();
    } finally {
      for (const [name, value] of [
        ['AWS_ENDPOINT_URL', saved.aws],
        ['SKYSYNC_GCS_ENDPOINT', saved.gcs],
      ] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });
});
