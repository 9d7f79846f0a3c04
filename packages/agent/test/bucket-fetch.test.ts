// The node's fetch of granted objects against a store that misbehaves: a connection cut in the middle of a body is
// read again from the first byte not yet written (not from the start, not failed), and the file is whole; a
// version that changed fails the object and leaves the old file.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { RootGuard } from '@skysync/apply';
import type { ReadGrant } from '@skysync/store';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchAll } from '../src/bucket/fetch.js';

const MiB = 1024 * 1024;
const body = randomBytes(3 * MiB + 5);
let etag = 'v1';
const ranges: Array<string | undefined> = [];
let cutNext = false;
let server: http.Server;
let url = '';

beforeAll(async () => {
  server = http.createServer((req, res) => {
    ranges.push(req.headers.range);
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    const end = m ? Number(m[2]) + 1 : body.length;
    res.writeHead(m ? 206 : 200, { etag: `"${etag}"`, 'content-length': end - start });
    if (cutNext) {
      // Two thirds of the answer, then the connection drops (a store's load balancer, a reset).
      cutNext = false;
      res.write(body.subarray(start, start + Math.floor(((end - start) * 2) / 3)), () => setTimeout(() => res.socket?.destroy(), 50));
      return;
    }
    res.end(body.subarray(start, end));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}/b/k`;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

function grant(): ReadGrant {
  return { uri: 's3://b/k', url, headers: {}, expiresAtMs: Date.now() + 60_000, size: body.length, etag: 'v1', versionHeader: 'etag' };
}

async function fetchInto(dir: string): Promise<{ placed: number; failed: string[] }> {
  const guard = new RootGuard(dir);
  const out = { placed: 0, failed: [] as string[] };
  try {
    await fetchAll(guard, [{ path: 'sub/k.bin', grant: grant() }], {
      placed: () => out.placed++,
      failed: (_p, error) => out.failed.push(error),
    });
  } finally {
    guard.close();
  }
  return out;
}

describe('fetching granted objects', () => {
  it('reads again from the first byte not written when the connection breaks mid-body, and places the file whole', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-fetch-'));
    ranges.length = 0;
    cutNext = true;
    const r = await fetchInto(dir);
    expect(r).toEqual({ placed: 1, failed: [] });
    const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    expect(sha(fs.readFileSync(path.join(dir, 'sub/k.bin')))).toBe(sha(body));
    expect(ranges).toHaveLength(2);
    expect(ranges[0]).toBeUndefined();
    // Resumed where the written bytes end (whole write groups of at least 1 MiB), not at 0, nor past the cut.
    const resumedAt = Number(/^bytes=(\d+)-/.exec(ranges[1] ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThanOrEqual(MiB);
    expect(resumedAt).toBeLessThanOrEqual(Math.floor((body.length * 2) / 3));
    expect(fs.readdirSync(path.join(dir, 'sub'))).toEqual(['k.bin']);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a version that changed fails the object and keeps the old file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-fetch-'));
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(path.join(dir, 'sub/k.bin'), 'old');
    etag = 'v2';
    try {
      const r = await fetchInto(dir);
      expect(r.placed).toBe(0);
      expect(r.failed).toEqual([expect.stringMatching(/^s3:\/\/b\/k: the object changed since the grant was made/)]);
      expect(fs.readFileSync(path.join(dir, 'sub/k.bin'), 'utf8')).toBe('old');
      expect(fs.readdirSync(path.join(dir, 'sub'))).toEqual(['k.bin']);
    } finally {
      etag = 'v1';
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
