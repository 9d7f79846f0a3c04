// Bucket mounts given bad input (issue 18's list), with the real CLI, moto and fake-gcs-server and a local: node:
// a bucket the credentials may not read, an endpoint where nothing listens or that never answers, a destination
// that is a file (or, for an object, a directory), the mount's path turning from an object into a prefix and
// back, and a disk that fills up while the node fetches. Each time: one line naming the mount, a non-zero exit,
// the files already there left whole (old or new, never torn, no temp file), and the next run converges.

import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { type ObjectStore, parseStoreUri } from '@skysync/store';
import { GcsObjectStore, S3ObjectStore } from '@skysync/store/cloud';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempPaths } from './helpers/faults.js';
import { type GcsServer, type S3Server, objectServersSkipReason, startGcsServer, startS3Server } from './helpers/object-servers.js';

const skip = objectServersSkipReason();
if (skip) console.log(`SKIP bucket-bad-input.test.ts: ${skip}`);
const rootSkip = process.platform !== 'linux' || process.getuid?.() !== 0 ? 'a full disk: needs root on Linux (mount)' : null;
if (rootSkip && process.env.CI === 'true') throw new Error(`${rootSkip}, and CI=true: this test must run in CI`);

/** Longer than any run here takes unless it hangs, which is what the endpoint test exists to catch. */
const DEADLINE_MS = 90_000;

let work: string;
let s3: S3Server;
let gcs: GcsServer;

function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    AWS_ENDPOINT_URL: s3.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_CONFIG_FILE: path.join(work, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(work, 'no-aws-credentials'),
    SKYSYNC_GCS_ENDPOINT: gcs.endpoint,
    GOOGLE_OAUTH_ACCESS_TOKEN: 'test-token',
    SKYSYNC_STATE_DIR: path.join(work, 'state'),
    SKYSYNC_CONTROL_PERSIST: '0',
    ...extra,
  };
}

async function push(home: string, task: string, extra: NodeJS.ProcessEnv = {}) {
  const r = await runCli(['push', `local:${home}`, task, '-q'], env(extra), DEADLINE_MS).done;
  expect(r.timedOut, `the push hung: ${r.hangReport ?? ''}`).toBe(false);
  return r;
}

/** A failed run: a non-zero exit and exactly one line naming the mount, matching `why`; no stack trace. */
function expectOneLine(r: { code: number | null; stderr: string }, mountKey: string, why: RegExp): string {
  expect(r.code, r.stderr).not.toBe(0);
  const lines = r.stderr.split('\n').filter((l) => l.includes(mountKey));
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(why);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  return lines[0]!;
}

function storeFor(uri: string, endpoint = s3.endpoint): ObjectStore {
  const parsed = parseStoreUri(uri);
  if (parsed.scheme === 's3') return new S3ObjectStore(parsed, { endpoint, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
  return new GcsObjectStore(parsed, { apiEndpoint: gcs.endpoint, projectId: 'test', accessToken: async () => ({ token: 't', expiresAtMs: Date.now() + 600_000 }) });
}

async function freshBucket(scheme: 's3' | 'gs', name = `b-${randomUUID().slice(0, 13)}`, endpoint?: string): Promise<ObjectStore> {
  const store = storeFor(`${scheme}://${name}`, endpoint);
  await store.createBucket();
  return store;
}

async function put(store: ObjectStore, key: string, data: string | Buffer): Promise<void> {
  await store.put(key, [{ kind: 'bytes', data: typeof data === 'string' ? Buffer.from(data) : data }]);
}

function taskFile(name: string, mounts: Record<string, string>): string {
  const file = path.join(work, `${name}.yaml`);
  fs.writeFileSync(file, ['file_mounts:', ...Object.entries(mounts).map(([k, v]) => `  ${k}: ${v}`), 'run: "true"', ''].join('\n'));
  return file;
}

/** Every file below `dir` by relative path, with the SHA-256 of its bytes. */
function files(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) visit(p);
      else out[path.relative(dir, p)] = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  visit(dir);
  return out;
}

const sha = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

describe.skipIf(!!skip)('bucket mounts given bad input', () => {
  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-bucket-bad-'));
    [s3, gcs] = await Promise.all([startS3Server(), startGcsServer()]);
  }, 60_000);
  afterAll(async () => {
    await Promise.all([s3?.stop(), gcs?.stop()]);
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('a bucket the credentials may not read: one line naming the mount; the files there stay; with access, the next run converges', async () => {
    const store = await freshBucket('s3');
    await put(store, 'd/a.txt', 'alpha\n');
    await put(store, 'd/sub/b.txt', 'bravo\n');
    const home = path.join(work, 'home-denied');
    const task = taskFile('denied', { '~/mnt/d': `s3://${store.uri.bucket}/d` });
    expect((await push(home, task)).code).toBe(0);
    const before = files(path.join(home, 'mnt/d'));

    // The same bucket on a server that checks credentials: this client's are not among its users'. It answers
    // the setup's three requests (head, create, put) whatever their credentials, then refuses.
    const strict = await startS3Server({ checkCredentialsAfter: 3 });
    try {
      const denied = await freshBucket('s3', store.uri.bucket, strict.endpoint);
      await put(denied, 'd/a.txt', 'changed where we may not read\n');
      const r = await push(home, task, { AWS_ENDPOINT_URL: strict.endpoint });
      expectOneLine(r, 'file_mounts.~/mnt/d', /access denied during bucket check; check the credentials and the bucket's policy/);
    } finally {
      await strict.stop();
    }
    expect(files(path.join(home, 'mnt/d'))).toEqual(before);
    const again = await push(home, task);
    expect(again.code, again.stderr).toBe(0);
    expect(files(path.join(home, 'mnt/d'))).toEqual(before);
  }, 120_000);

  it('an endpoint where nothing listens, or that accepts and never answers: one line naming the mount, in bounded time', async () => {
    const store = await freshBucket('s3');
    await put(store, 'x.txt', 'x\n');
    const gstore = await freshBucket('gs');
    await put(gstore, 'y.txt', 'y\n');
    const home = path.join(work, 'home-unreachable');
    const s3Task = taskFile('unreachable-s3', { '~/mnt/s': `s3://${store.uri.bucket}` });
    const gsTask = taskFile('unreachable-gs', { '~/mnt/g': `gs://${gstore.uri.bucket}` });
    expect((await push(home, s3Task)).code).toBe(0);
    expect((await push(home, gsTask)).code).toBe(0);

    const closed = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = srv.address() as net.AddressInfo;
        srv.close(() => resolve(port));
      });
    });
    const refused = `http://127.0.0.1:${closed}`;
    expectOneLine(await push(home, s3Task, { AWS_ENDPOINT_URL: refused }), 'file_mounts.~/mnt/s', /does not answer \(ECONNREFUSED\)/);
    expectOneLine(await push(home, gsTask, { SKYSYNC_GCS_ENDPOINT: refused }), 'file_mounts.~/mnt/g', /does not answer \(ECONNREFUSED\)/);

    // Accepts, reads, never answers: without a limit the SDKs wait forever (a launch that hangs).
    const held: net.Socket[] = [];
    const silent = net.createServer((socket) => {
      held.push(socket);
      socket.on('error', () => {});
      socket.resume();
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const mute = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    try {
      for (const [task, key, setting] of [
        [s3Task, 'file_mounts.~/mnt/s', { AWS_ENDPOINT_URL: mute }],
        [gsTask, 'file_mounts.~/mnt/g', { SKYSYNC_GCS_ENDPOINT: mute }],
      ] as const) {
        const r = await push(home, task, { ...setting, SKYSYNC_STORE_TIMEOUT: '1' });
        expectOneLine(r, key, /does not answer \(ETIMEDOUT\)/);
        expect(r.ms).toBeLessThan(60_000);
      }
    } finally {
      for (const s of held) s.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
    expect(fs.readFileSync(path.join(home, 'mnt/s/x.txt'), 'utf8')).toBe('x\n');
    expect(fs.readFileSync(path.join(home, 'mnt/g/y.txt'), 'utf8')).toBe('y\n');
    for (const task of [s3Task, gsTask]) expect((await push(home, task)).code).toBe(0);
  }, 180_000);

  it('a destination in the way: a file where a prefix goes, a directory where an object goes; nothing of it touched', async () => {
    const store = await freshBucket('gs');
    await put(store, 'd/a.txt', 'alpha\n');
    await put(store, 'one.bin', 'one object');
    const home = path.join(work, 'home-in-the-way');
    fs.mkdirSync(path.join(home, 'mnt/dir'), { recursive: true });
    fs.writeFileSync(path.join(home, 'mnt/file'), 'a file of mine\n');
    fs.writeFileSync(path.join(home, 'mnt/dir/mine.txt'), 'mine\n');
    fs.writeFileSync(path.join(home, 'mnt/parent'), 'a file where a directory would go\n');
    const cases = [
      { key: '~/mnt/file', uri: `gs://${store.uri.bucket}/d`, why: /~\/mnt\/file is a file on the node, not a directory; remove it or mount the bucket elsewhere/ },
      { key: '~/mnt/dir', uri: `gs://${store.uri.bucket}/one.bin`, why: /~\/mnt\/dir is a directory on the node; move it away or mount the object elsewhere/ },
      { key: '~/mnt/parent/x', uri: `gs://${store.uri.bucket}/d`, why: /a parent directory of ~\/mnt\/parent\/x is a file on the node/ },
    ];
    for (const c of cases) {
      const task = taskFile(`in-the-way-${path.basename(c.key)}`, { [c.key]: c.uri });
      expectOneLine(await push(home, task), `file_mounts.${c.key}`, c.why);
    }
    expect(fs.readFileSync(path.join(home, 'mnt/file'), 'utf8')).toBe('a file of mine\n');
    expect(fs.readdirSync(path.join(home, 'mnt/dir'))).toEqual(['mine.txt']);
    expect(fs.readFileSync(path.join(home, 'mnt/parent'), 'utf8')).toBe('a file where a directory would go\n');
    // Moved away: the next run places it.
    fs.rmSync(path.join(home, 'mnt/file'));
    expect((await push(home, taskFile('in-the-way-file', { '~/mnt/file': `gs://${store.uri.bucket}/d` }))).code).toBe(0);
    expect(fs.readFileSync(path.join(home, 'mnt/file/a.txt'), 'utf8')).toBe('alpha\n');
  }, 120_000);

  it("the mount's path is an object on one run and a prefix on the next, and back; keys inside flip the same way: each run converges", async () => {
    const store = await freshBucket('s3');
    const home = path.join(work, 'home-flip');
    const task = taskFile('flip', { '~/mnt/p': `s3://${store.uri.bucket}/p`, '~/mnt/k': `s3://${store.uri.bucket}/k` });
    const p = path.join(home, 'mnt/p');
    const k = path.join(home, 'mnt/k');
    await put(store, 'p', 'p as an object\n');
    await put(store, 'k/a', 'a as a file\n');
    expect((await push(home, task)).code).toBe(0);
    expect(fs.readFileSync(p, 'utf8')).toBe('p as an object\n');

    await store.remove(['p', 'k/a']);
    await put(store, 'p/x.txt', 'x\n');
    await put(store, 'k/a/b', 'b below a\n');
    let r = await push(home, task);
    expect(r.code, r.stderr).toBe(0);
    expect(files(p)).toEqual({ 'x.txt': sha('x\n') });
    expect(files(k)).toEqual({ 'a/b': sha('b below a\n') });

    await store.remove(['p/x.txt', 'k/a/b']);
    await put(store, 'p', 'p an object again\n');
    await put(store, 'k/a', 'a a file again\n');
    r = await push(home, task);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(p, 'utf8')).toBe('p an object again\n');
    expect(files(k)).toEqual({ a: sha('a a file again\n') });

    // A prefix again, then a job writes into the directory: the object cannot take its place, and says so once.
    await store.remove(['p']);
    await put(store, 'p/x.txt', 'x\n');
    expect((await push(home, task)).code).toBe(0);
    fs.writeFileSync(path.join(p, 'job.out'), 'a job wrote this\n');
    await store.remove(['p/x.txt']);
    await put(store, 'p', 'p once more\n');
    expectOneLine(await push(home, task), 'file_mounts.~/mnt/p', /~\/mnt\/p is a directory on the node holding files skysync did not place/);
    expect(files(p)).toEqual({ 'job.out': sha('a job wrote this\n') });
  }, 120_000);

  describe.skipIf(!!rootSkip)('a disk that fills up', () => {
    const mounted: string[] = [];
    afterEach(() => {
      for (const at of mounted.splice(0).reverse()) execFileSync('umount', ['-l', at]);
    });

    it('one line naming the mount, a non-zero exit, no torn or temp file; with room again the next run converges', async () => {
      const store = await freshBucket('s3');
      const MiB = 1024 * 1024;
      const first = { 'a.bin': randomBytes(MiB), 'small.txt': Buffer.from('small\n') };
      for (const [k, v] of Object.entries(first)) await put(store, `d/${k}`, v);
      const home = path.join(work, 'home-full');
      const small = path.join(home, 'mnt/small');
      fs.mkdirSync(small, { recursive: true });
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', small]);
      mounted.push(small);
      const task = taskFile('full', { '~/mnt/small': `s3://${store.uri.bucket}/d` });
      expect((await push(home, task)).code).toBe(0);
      expect(files(small)).toEqual({ 'a.bin': sha(first['a.bin']), 'small.txt': sha(first['small.txt']) });

      // a.bin changes, and five more objects of 1 MiB do not fit in what is left.
      const next: Record<string, Buffer> = { 'a.bin': randomBytes(MiB), 'small.txt': first['small.txt'] };
      for (let i = 0; i < 5; i++) next[`more/m${i}.bin`] = randomBytes(MiB);
      for (const [k, v] of Object.entries(next)) await put(store, `d/${k}`, v);
      const r = await push(home, task);
      expectOneLine(r, 'file_mounts.~/mnt/small', /not placed at ~\/mnt\/small: the node's disk is full there; free space .* and run again/);
      const allowed = (rel: string): string[] => [first[rel as keyof typeof first], next[rel]].filter((x): x is Buffer => !!x).map(sha);
      for (const [rel, digest] of Object.entries(files(small))) expect(allowed(rel), `${rel} is torn`).toContain(digest);
      expect(tempPaths(small)).toEqual([]);

      execFileSync('mount', ['-o', 'remount,size=16m', small]);
      const again = await push(home, task);
      expect(again.code, again.stderr).toBe(0);
      expect(files(small)).toEqual(Object.fromEntries(Object.entries(next).map(([k, v]) => [k, sha(v)])));
    }, 120_000);
  });
});
