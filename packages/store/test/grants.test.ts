// Read grants: the client makes them with its credentials; a node reads with Node's fetch only. The reader runs in
// a child process whose environment has no AWS or Google settings at all and whose HOME is empty, as on a node.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { type ReadGrant, fetchObject } from '@skysync/store';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Scheme, freshStore, gcsStore, objectServers, randomBytes, s3Store, skipReason } from './helpers/servers.js';

const servers = objectServers();
const MiB = 1024 * 1024;
const storeEntry = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'index.js');

// The node's side: the grant arrives on stdin (as the agent gets it over its channel); it prints a digest per range.
const READER = `
import { createHash } from 'node:crypto';
const { fetchObject } = await import(process.argv[1]);
let input = '';
for await (const chunk of process.stdin) input += chunk;
const { grant, ranges } = JSON.parse(input);
const out = [];
for (const range of ranges) {
  try {
    const bytes = await fetchObject(grant, range ? { range } : {});
    out.push({ length: bytes.length, sha: createHash('sha256').update(bytes).digest('hex') });
  } catch (error) {
    out.push({ error: error.kind, message: error.message });
  }
}
const secrets = Object.keys(process.env).filter((name) => /^(AWS_|GOOGLE_|CLOUDSDK_|GCLOUD)/.test(name));
console.log(JSON.stringify({ out, secrets }));
`;

interface ReaderResult {
  out: Array<{ length?: number; sha?: string; error?: string; message?: string }>;
  secrets: string[];
}

let emptyHome = '';
beforeAll(() => {
  emptyHome = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-node-home-'));
});
afterAll(() => fs.rmSync(emptyHome, { recursive: true, force: true }));

async function readOnNode(grant: ReadGrant, ranges: Array<{ start: number; end: number } | null>): Promise<ReaderResult> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', READER, storeEntry], {
    env: { PATH: process.env.PATH, HOME: emptyHome },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  child.stdin.end(JSON.stringify({ grant, ranges }));
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`reader exited ${code}: ${stderr}`);
  return JSON.parse(stdout) as ReaderResult;
}

function sha(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

describe.skipIf(skipReason).each<Scheme>(['s3', 'gs'])('read grants on %s', (scheme) => {
  it('let a process without credentials read the object and ranges of it, checked', async () => {
    const store = await freshStore(servers(), scheme);
    const data = randomBytes(3 * MiB + 17);
    await store.put('dir/weights.bin', [{ kind: 'bytes', data }]);
    const grant = await store.readGrant('dir/weights.bin', { expiresInSeconds: 300 });
    expect(grant).toMatchObject({ uri: `${scheme}://${store.uri.bucket}/dir/weights.bin`, size: data.length });
    const ranges = [null, { start: 0, end: 1 }, { start: MiB - 3, end: 2 * MiB + 5 }, { start: data.length - 10, end: data.length }];
    const result = await readOnNode(grant, ranges);
    expect(result.secrets).toEqual([]);
    expect(result.out).toEqual(
      ranges.map((range) => {
        const bytes = range ? data.subarray(range.start, range.end) : data;
        return { length: bytes.length, sha: sha(bytes) };
      }),
    );

    // The object changes: the old grant no longer reads anything (S3: the ETag differs; GCS: the generation is gone).
    await store.put('dir/weights.bin', [{ kind: 'bytes', data: randomBytes(data.length) }]);
    const stale = await readOnNode(grant, [{ start: 0, end: 10 }]);
    expect(stale.out[0]?.error).toBe(scheme === 's3' ? 'changed' : 'missing');
    expect(stale.out[0]?.message).toContain(`${scheme}://${store.uri.bucket}/dir/weights.bin bytes 0-10: `);
    expect(stale.out[0]?.message).not.toContain(grant.url);
  });

  it('expire: an expired grant is refused before any request', async () => {
    const store = await freshStore(servers(), scheme);
    await store.put('k', [{ kind: 'bytes', data: Buffer.from('hello') }]);
    const grant = await store.readGrant('k', { expiresInSeconds: 1 });
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await expect(fetchObject(grant)).rejects.toMatchObject({ kind: 'expired' });
  });
});

describe.skipIf(skipReason)('grant request shape', () => {
  it('S3: a presigned GET URL (SigV4 query, expiry) and no header', async () => {
    const store = s3Store(servers(), `shape-${Date.now()}`);
    await store.createBucket();
    await store.put('a b/c', [{ kind: 'bytes', data: Buffer.from('x') }]);
    const grant = await store.readGrant('a b/c', { expiresInSeconds: 120 });
    const url = new URL(grant.url);
    expect(url.origin).toBe(servers().s3.endpoint);
    expect(url.pathname).toBe(`/${store.uri.bucket}/a%20b/c`);
    expect(url.searchParams.get('X-Amz-Algorithm')).toBe('AWS4-HMAC-SHA256');
    expect(url.searchParams.get('X-Amz-Expires')).toBe('120');
    expect(url.searchParams.get('X-Amz-Credential')).toMatch(/^test\//);
    expect(grant.headers).toEqual({});
    expect(grant.versionHeader).toBe('etag');
  });

  it('GCS: the media URL pinned to a generation, with the bearer token in a header (seen by the server)', async () => {
    const target = servers().gcs.endpoint;
    const seen: http.IncomingHttpHeaders[] = [];
    // A recording front for fake-gcs-server (which ignores auth): what the node sends is what arrives here.
    const front = http.createServer(async (request, response) => {
      seen.push(request.headers);
      const upstream = await fetch(target + request.url, { headers: request.headers.range ? { range: request.headers.range } : {} });
      response.writeHead(upstream.status, Object.fromEntries(upstream.headers));
      response.end(Buffer.from(await upstream.arrayBuffer()));
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    try {
      const frontUrl = `http://127.0.0.1:${(front.address() as { port: number }).port}`;
      const store = await freshStore(servers(), 'gs');
      await store.put('a b/c', [{ kind: 'bytes', data: Buffer.from('hello') }]);
      const viaFront = gcsStore(servers(), store.uri.bucket, { apiEndpoint: frontUrl });
      const grant = await viaFront.readGrant('a b/c');
      const generation = (await store.head('a b/c'))?.etag;
      expect(grant.url).toBe(`${frontUrl}/storage/v1/b/${store.uri.bucket}/o/a%20b%2Fc?alt=media&generation=${generation}`);
      expect(grant.headers).toEqual({ authorization: 'Bearer test-token' });
      const seenBefore = seen.length;
      const result = await readOnNode(grant, [{ start: 1, end: 4 }]);
      expect(result.out[0]).toEqual({ length: 3, sha: sha(Buffer.from('ell')) });
      expect(seen.slice(seenBefore).map((headers) => [headers.authorization, headers.range])).toEqual([['Bearer test-token', 'bytes=1-3']]);
    } finally {
      await new Promise((resolve) => front.close(resolve));
    }
  });
});

describe('a store that accepts and never answers', () => {
  it('is given up after the idle limit, as unreachable (which the node tries again), not waited on forever', async () => {
    const held: net.Socket[] = [];
    const silent = net.createServer((socket) => {
      held.push(socket);
      socket.resume();
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}/b/k`;
      const grant: ReadGrant = { uri: 's3://b/k', url, headers: {}, expiresAtMs: Date.now() + 60_000, size: 5, etag: 'e', versionHeader: 'etag' };
      const started = Date.now();
      await expect(fetchObject(grant, { idleMs: 300 })).rejects.toMatchObject({ kind: 'unreachable', message: 's3://b/k: the store does not answer (ETIMEDOUT)' });
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      for (const s of held) s.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});
