// Storage objects with a local source (COPY): the client's upload to the bucket, against moto (S3) and
// fake-gcs-server (GCS). What the bucket holds is checked by listing it; what crossed the wire is counted from the
// server's side (moto's request recorder; for GCS, the object versions and pieces the bucket lists).
import { spawn, spawnSync } from 'node:child_process';
import crypto, { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { StorageError, listCreatedBuckets, uploadStorage } from '@skysync/engine';
import { type ObjectInfo, type ObjectStore, parseStoreUri } from '@skysync/store';
import { GcsObjectStore, S3ObjectStore } from '@skysync/store/cloud';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type * as Native from '../native/index.js';
import { type GcsServer, type S3Server, objectServersSkipReason, startGcsServer, startS3Server } from './helpers/object-servers.js';
import { gitKept } from './helpers/tree.js';

const require = createRequire(import.meta.url);
const native = require('../native/index.cjs') as typeof Native;
const skipReason = objectServersSkipReason();
const MiB = 1024 * 1024;
const ROOT = path.resolve(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'packages/cli/dist/bin.js');

let s3: S3Server;
let gcs: GcsServer;
let scratch: string;

beforeAll(async () => {
  if (skipReason) return;
  [s3, gcs] = await Promise.all([startS3Server(), startGcsServer()]);
});
afterAll(async () => {
  await Promise.all([s3?.stop(), gcs?.stop()]);
});
beforeEach(() => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-storage-'));
  process.env.SKYSYNC_STATE_DIR = path.join(scratch, 'state');
});

type Scheme = 's3' | 'gs';
const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };

function openStore(uri: string, endpoint?: string): ObjectStore {
  const parsed = parseStoreUri(uri);
  if (parsed.scheme === 's3') return new S3ObjectStore(parsed, { endpoint: endpoint ?? s3.endpoint, credentials: CREDENTIALS, maxAttempts: 1 });
  const accessToken = async () => ({ token: 'test-token', expiresAtMs: Date.now() + 600_000 });
  return new GcsObjectStore(parsed, { apiEndpoint: endpoint ?? gcs.endpoint, projectId: 'test', accessToken, maxAttempts: 1 });
}

function mount(name: string, sources: string[], scheme: Scheme) {
  return { key: 'file_mounts./data', name, sources, store: scheme === 's3' ? 's3' : 'gcs' };
}

function upload(name: string, source: string | string[], scheme: Scheme) {
  return uploadStorage(mount(name, Array.isArray(source) ? source : [source], scheme), { native, openStore: (uri) => openStore(uri), persistent: false });
}

function bucketName(): string {
  return `copy-${randomUUID().slice(0, 13)}`;
}

async function objects(store: ObjectStore, prefix = ''): Promise<Map<string, ObjectInfo>> {
  const out = new Map<string, ObjectInfo>();
  for await (const info of store.list(prefix)) out.set(info.key, info);
  return out;
}

async function content(store: ObjectStore, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of (await store.read(key)) as AsyncIterable<Buffer>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

function write(root: string, files: Record<string, string | Buffer>): void {
  for (const [rel, data] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), data);
  }
}

/** A tree whose nested .gitignore files re-include and exclude at several levels. */
function ignoredTree(root: string): void {
  write(root, {
    'README.md': 'readme',
    '.gitignore': '*.log\nbuild/\n/top-only.txt\n',
    'top-only.txt': 'ignored at the root only',
    'app.log': 'ignored',
    'build/out.bin': 'ignored dir',
    'src/main.py': 'print(1)',
    'src/top-only.txt': 'kept: the root rule is anchored',
    'src/.gitignore': '!keep.log\nsecret*\n',
    'src/keep.log': 'kept by negation',
    'src/other.log': 'ignored',
    'src/secret.key': 'ignored',
    'src/deep/nested/.gitignore': '*.tmp\n!important.tmp\n',
    'src/deep/nested/a.tmp': 'ignored',
    'src/deep/nested/important.tmp': 'kept',
    'src/deep/nested/data.csv': '1,2,3',
    'empty.txt': '',
  });
}

/** S3 request bodies moto received, not counting server-side copies. */
function bytesReceived(log: Awaited<ReturnType<S3Server['recording']>>): number {
  return log
    .filter((r) => (r.method === 'PUT' || r.method === 'POST') && !r.headers['x-amz-copy-source'])
    .reduce((sum, r) => sum + Number(r.headers['x-amz-decoded-content-length'] ?? r.bodyBytes), 0);
}

describe.skipIf(skipReason)('Storage COPY from a local source', () => {
  it.each(['s3', 'gs'] as const)(
    '%s: creates the bucket, uploads exactly what git keeps, then nothing when nothing changed, and removes what was deleted locally',
    async (scheme) => {
      const source = path.join(scratch, 'src');
      ignoredTree(source);
      const name = bucketName();
      const first = await upload(name, source, scheme);
      expect(first.uri).toBe(`${scheme}://${name}`);
      expect(first.stats.bucketCreated).toBe(true);

      const store = openStore(first.uri);
      const kept = gitKept(source, path.join(scratch, 'git'));
      expect(new Set((await objects(store)).keys())).toEqual(kept);
      expect((await content(store, 'src/keep.log')).toString()).toBe('kept by negation');
      expect((await content(store, 'empty.txt')).length).toBe(0);
      expect((await objects(store, '.skysync/')).has('.skysync/bucket.json')).toBe(true);
      expect((await listCreatedBuckets()).map((b) => [b.uri, b.persistent])).toEqual([[first.uri, false]]);

      // Nothing changed: one HEAD of the manifest, no listing, no write.
      const before = await objects(store);
      if (scheme === 's3') await s3.startRecording();
      const second = await upload(name, source, scheme);
      if (scheme === 's3') {
        const log = await s3.recording();
        expect(log.map((r) => r.method)).toEqual(['HEAD']);
      }
      expect(second.stats).toMatchObject({ objectsUploaded: 0, objectsListed: 0, objectsDeleted: 0, bytesSent: 0, bucketCreated: false });
      expect(await objects(store)).toEqual(before);

      // Local deletions remove what skysync uploaded; an object someone else put there stays.
      await store.put('foreign.txt', [{ kind: 'bytes', data: Buffer.from('not ours') }]);
      fs.rmSync(path.join(source, 'README.md'));
      fs.rmSync(path.join(source, 'src/deep'), { recursive: true });
      fs.writeFileSync(path.join(source, 'src/main.py'), 'print(2)');
      const third = await upload(name, source, scheme);
      expect(third.stats).toMatchObject({ objectsUploaded: 1, objectsDeleted: 4 });
      const after = new Set((await objects(store)).keys());
      expect(after).toEqual(new Set([...gitKept(source, path.join(scratch, 'git')), 'foreign.txt']));
      expect((await content(store, 'src/main.py')).toString()).toBe('print(2)');
    },
  );

  it('a source list: each directory lands under its basename, each with its own record', async () => {
    const one = path.join(scratch, 'one');
    const two = path.join(scratch, 'two');
    write(one, { 'x.txt': '1x', 'sub/y.txt': '1y' });
    write(two, { 'x.txt': '2x' });
    const name = bucketName();
    const first = await upload(name, [one, two], 's3');
    const store = openStore(first.uri);
    expect([...(await objects(store)).keys()].sort()).toEqual(['one/sub/y.txt', 'one/x.txt', 'two/x.txt']);
    expect((await objects(store, '.skysync/manifests/')).size).toBe(2);
    fs.rmSync(path.join(two, 'x.txt'));
    const second = await upload(name, [one, two], 's3');
    expect(second.stats).toMatchObject({ objectsUploaded: 0, objectsDeleted: 1 });
    expect([...(await objects(store)).keys()].sort()).toEqual(['one/sub/y.txt', 'one/x.txt']);
  });

  it('s3: one byte inserted into a 40 MiB file sends at most 16 MiB (moto request log), the rest is copied in the bucket', async () => {
    const source = path.join(scratch, 'src');
    const big = crypto.randomBytes(40 * MiB);
    write(source, { 'model.bin': big, 'small.txt': 'small' });
    const name = bucketName();
    await upload(name, source, 's3');
    const at = 17 * MiB + 123;
    const changed = Buffer.concat([big.subarray(0, at), Buffer.from('x'), big.subarray(at)]);
    fs.writeFileSync(path.join(source, 'model.bin'), changed);

    await s3.startRecording();
    const result = await upload(name, source, 's3');
    const received = bytesReceived(await s3.recording());
    expect(received).toBeLessThanOrEqual(16 * MiB);
    expect(result.stats.bytesCopied).toBeGreaterThanOrEqual(24 * MiB);
    expect(result.stats.bytesSent).toBeLessThanOrEqual(received);
    expect((await content(openStore(result.uri), 'model.bin')).equals(changed)).toBe(true);
  });

  it('gs: one byte inserted into a 40 MiB file uploads one piece; the rest is composed from stored pieces', async () => {
    const source = path.join(scratch, 'src');
    const big = crypto.randomBytes(40 * MiB);
    write(source, { 'model.bin': big });
    const name = bucketName();
    const first = await upload(name, source, 'gs');
    const store = openStore(first.uri);
    const piecesBefore = new Set((await objects(store, '.skysync/pieces/')).keys());
    const at = 17 * MiB + 123;
    const changed = Buffer.concat([big.subarray(0, at), Buffer.from('x'), big.subarray(at)]);
    fs.writeFileSync(path.join(source, 'model.bin'), changed);

    const result = await upload(name, source, 'gs');
    const newPieces = [...(await objects(store, '.skysync/pieces/')).values()].filter((info) => !piecesBefore.has(info.key));
    const uploaded = newPieces.reduce((sum, info) => sum + info.size, 0);
    expect(uploaded).toBeLessThanOrEqual(16 * MiB);
    expect(result.stats.bytesSent).toBe(uploaded);
    expect((await content(store, 'model.bin')).equals(changed)).toBe(true);
  });

  it('two processes uploading different trees to one bucket at once leave one consistent tree, and a later upload converges', async () => {
    const name = bucketName();
    const trees = ['a', 'b'].map((who) => {
      const root = path.join(scratch, who);
      const files: Record<string, string> = {};
      for (let i = 0; i < 150; i++) files[`shared/f${i}.txt`] = `${who}${i}`;
      for (let i = 0; i < 20; i++) files[`only-${who}/g${i}.txt`] = `${who}-only${i}`;
      write(root, files);
      return { root, files };
    });
    const script = path.join(scratch, 'upload.mjs');
    fs.writeFileSync(
      script,
      `import { createRequire } from 'node:module';
const require = createRequire(${JSON.stringify(`${ROOT}/`)});
const { uploadStorage } = await import(${JSON.stringify(path.join(ROOT, 'packages/engine/dist/index.js'))});
const native = require('./native/index.cjs');
const [name, source] = process.argv.slice(2);
const result = await uploadStorage({ key: 'file_mounts./data', name, sources: [source], store: 's3' }, { native });
process.stdout.write(JSON.stringify(result.stats));
`,
    );
    const env = { ...process.env, AWS_ENDPOINT_URL: s3.endpoint, AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' };
    const run = (who: number) =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, [script, name, trees[who]!.root], { env: { ...env, SKYSYNC_STATE_DIR: path.join(scratch, `state-${who}`) } });
        let out = '';
        let err = '';
        child.stdout.on('data', (d) => (out += d));
        child.stderr.on('data', (d) => (err += d));
        child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`upload ${who} failed: ${err}`))));
      });
    await Promise.all([run(0), run(1)]);

    const store = openStore(`s3://${name}`);
    const consistent = async (): Promise<number> => {
      const listed = await objects(store);
      const winner = trees.findIndex((t) => listed.size === Object.keys(t.files).length && Object.keys(t.files).every((k) => listed.has(k)));
      expect(winner).toBeGreaterThanOrEqual(0);
      for (const [key, data] of Object.entries(trees[winner]!.files)) expect((await content(store, key)).toString()).toBe(data);
      const manifests = [...(await objects(store, '.skysync/manifests/')).keys()];
      expect(manifests).toHaveLength(1);
      const manifest = JSON.parse((await content(store, manifests[0]!)).toString()) as { objects: Record<string, [number, string]> };
      expect(Object.keys(manifest.objects).sort()).toEqual([...listed.keys()].sort());
      for (const [key, [size, etag]] of Object.entries(manifest.objects)) expect([size, etag]).toEqual([listed.get(key)!.size, listed.get(key)!.etag]);
      return winner;
    };
    const winner = await consistent();
    const loser = 1 - winner;
    const again = JSON.parse(await run(loser)) as { objectsListed: number };
    expect(again.objectsListed).toBeGreaterThan(0);
    expect(await consistent()).toBe(loser);
  });

  it.each(['s3', 'gs'] as const)('%s: a client whose manifest write loses the race re-lists, re-sends what the other overwrote, and its view wins whole', async (scheme) => {
    const name = bucketName();
    const a = path.join(scratch, 'a');
    const b = path.join(scratch, 'b');
    write(a, { 'same.txt': 'from a', 'a-only.txt': 'a', 'both/x.txt': 'ax' });
    write(b, { 'same.txt': 'from b', 'b-only.txt': 'b', 'both/x.txt': 'bx' });
    // A's manifest write waits until B's upload is done: B writes first, A's conditional write fails.
    let release: () => void = () => {};
    const bDone = new Promise<void>((resolve) => (release = resolve));
    const gated = (uri: string): ObjectStore => {
      const store = openStore(uri);
      const put = store.put.bind(store);
      store.put = async (key, parts, options) => {
        if (key.startsWith('.skysync/manifests/')) await bDone;
        return put(key, parts, options);
      };
      return store;
    };
    const first = uploadStorage(mount(name, [a], scheme), { native, openStore: gated });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const second = await upload(name, b, scheme);
    release();
    const result = await first;
    expect(second.stats.manifestRetries).toBe(0);
    expect(result.stats.manifestRetries).toBe(1);
    const store = openStore(result.uri);
    expect([...(await objects(store)).keys()].sort()).toEqual(['a-only.txt', 'both/x.txt', 'same.txt']);
    expect((await content(store, 'same.txt')).toString()).toBe('from a');
    expect((await content(store, 'both/x.txt')).toString()).toBe('ax');
  });

  it('an endpoint that does not answer: one line naming the mount', async () => {
    const port = await closedPort();
    const source = path.join(scratch, 'src');
    write(source, { 'a.txt': 'a' });
    for (const scheme of ['s3', 'gs'] as const) {
      const attempt = uploadStorage(mount(bucketName(), [source], scheme), { native, openStore: (uri) => openStore(uri, `http://127.0.0.1:${port}`) });
      await expect(attempt).rejects.toBeInstanceOf(StorageError);
      const message = ((await attempt.catch((e) => e)) as Error).message;
      expect(message).toMatch(/^file_mounts\.\/data: (s3|gs):\/\/copy-[^ ]+: the endpoint http:\/\/127\.0\.0\.1:\d+ does not answer \(ECONNREFUSED\)/);
      expect(message).not.toContain('\n');
    }
  });

  it('a denied bucket (the server answers 403 AccessDenied to everything): one line naming the mount', async () => {
    const server = http.createServer((request, response) => {
      request.resume();
      const s3Style = !request.url?.startsWith('/storage/') && !request.url?.startsWith('/upload/');
      response.writeHead(403, { 'content-type': s3Style ? 'application/xml' : 'application/json' });
      response.end(
        s3Style
          ? '<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
          : JSON.stringify({ error: { code: 403, message: 'denied', errors: [{ reason: 'forbidden', message: 'denied' }] } }),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const source = path.join(scratch, 'src');
    write(source, { 'a.txt': 'a' });
    try {
      for (const scheme of ['s3', 'gs'] as const) {
        const name = bucketName();
        const error = (await uploadStorage(mount(name, [source], scheme), { native, openStore: (uri) => openStore(uri, endpoint) }).catch((e) => e)) as Error;
        expect(error).toBeInstanceOf(StorageError);
        expect(error.message).toMatch(new RegExp(`^file_mounts\\./data: ${scheme}://${name}: access denied during bucket check; check the credentials and the bucket's policy`));
        expect(error.message).not.toContain('\n');
      }
    } finally {
      server.close();
    }
  });

  it('skysync storage ls / delete: lists and deletes what skysync created, refuses any other bucket in one line', async () => {
    const source = path.join(scratch, 'src');
    write(source, { 'a.txt': 'a', 'big/b.bin': crypto.randomBytes(20 * MiB) });
    const name = bucketName();
    await upload(name, source, 's3');
    const foreign = bucketName();
    await openStore(`s3://${foreign}`).createBucket();

    const env = { ...process.env, AWS_ENDPOINT_URL: s3.endpoint, AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_MAX_ATTEMPTS: '1' };
    const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { env, encoding: 'utf8' });
    const ls = cli('storage', 'ls', '--json');
    expect(ls.status).toBe(0);
    expect((JSON.parse(ls.stdout) as { uri: string }[]).map((b) => b.uri)).toEqual([`s3://${name}`]);

    const refused = cli('storage', 'delete', foreign);
    expect(refused.status).toBe(1);
    expect(refused.stderr.trim().split('\n')).toEqual([
      `skysync: ${foreign}: not a bucket skysync created, so skysync does not delete it (\`skysync storage ls\` lists those; use the cloud's own tools for others)`,
    ]);
    await expect(openStore(`s3://${foreign}`).checkBucket()).resolves.toBeUndefined();

    const unreachable = spawnSync(process.execPath, [BIN, 'storage', 'delete', name], {
      env: { ...env, AWS_ENDPOINT_URL: `http://127.0.0.1:${await closedPort()}` },
      encoding: 'utf8',
    });
    expect(unreachable.status).toBe(1);
    expect(unreachable.stderr.trim().split('\n')).toHaveLength(1);
    expect(unreachable.stderr).toContain('does not answer (ECONNREFUSED)');

    const deleted = cli('storage', 'delete', name);
    expect(deleted.stderr).toBe(`s3://${name}: deleted (4 objects)\n`);
    expect(deleted.status).toBe(0);
    await expect(openStore(`s3://${name}`).checkBucket()).rejects.toMatchObject({ kind: 'missing-bucket' });
    expect(JSON.parse(cli('storage', 'ls', '--json').stdout)).toEqual([]);
  });
});

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
