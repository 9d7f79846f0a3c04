// Cloud URI file_mounts (`DST: s3://bucket/prefix`, `gs://...`) end to end: the real CLI, moto's S3 server and
// fake-gcs-server, a local: node first, then a node behind the real sshd harness. Each node fetches from the store
// itself through read grants; the checks: object and prefix mounts on both stores, nothing fetched when nothing
// changed, a same-size replacement fetched, deletions (a job's file kept, --no-delete), hostile keys refused per
// key with nothing written outside, a missing bucket, and no credential on the node's disk or in any output.

import { spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type ObjectStore, parseStoreUri } from '@skysync/store';
import { GcsObjectStore, S3ObjectStore } from '@skysync/store/cloud';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GcsServer, type S3Server, objectServersSkipReason, startGcsServer, startS3Server } from './helpers/object-servers.js';
import { sshSkipReason, startNodes, type SshCluster } from './helpers/sshd.js';

const skip = objectServersSkipReason();
if (skip) console.log(`SKIP bucket-mounts.test.ts: ${skip}`);
const BIN = path.resolve('packages/cli/dist/bin.js');

// Distinctive values, so that finding one anywhere on a node is a real leak and not a coincidence.
const SECRETS = {
  AWS_ACCESS_KEY_ID: `AKIA${randomBytes(8).toString('hex').toUpperCase()}`,
  AWS_SECRET_ACCESS_KEY: `secret-${randomBytes(16).toString('hex')}`,
  AWS_SESSION_TOKEN: `session-${randomBytes(16).toString('hex')}`,
  GOOGLE_OAUTH_ACCESS_TOKEN: `ya29.${randomBytes(16).toString('hex')}`,
};

let work: string;
let s3: S3Server;
let gcs: GcsServer;

function cliEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    ...SECRETS,
    AWS_ENDPOINT_URL: s3.endpoint,
    AWS_REGION: 'us-east-1',
    SKYSYNC_GCS_ENDPOINT: gcs.endpoint,
    // The project a new GCS bucket is made in, as the SDK reads it.
    GOOGLE_CLOUD_PROJECT: 'test',
    SKYSYNC_STATE_DIR: path.join(work, 'state'),
    SKYSYNC_CONTROL_PERSIST: '0',
    SSH_AUTH_SOCK: '',
  };
}

function skysync(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 180_000, cwd: work, env: cliEnv() });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function storeFor(uri: string): ObjectStore {
  const parsed = parseStoreUri(uri);
  if (parsed.scheme === 's3') return new S3ObjectStore(parsed, { endpoint: s3.endpoint, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
  return new GcsObjectStore(parsed, { apiEndpoint: gcs.endpoint, projectId: 'test', accessToken: async () => ({ token: 't', expiresAtMs: Date.now() + 600_000 }) });
}

async function freshBucket(scheme: 's3' | 'gs'): Promise<ObjectStore> {
  const store = storeFor(`${scheme}://b-${randomUUID().slice(0, 13)}`);
  await store.createBucket();
  return store;
}

async function put(store: ObjectStore, key: string, data: string | Buffer): Promise<void> {
  await store.put(key, [{ kind: 'bytes', data: typeof data === 'string' ? Buffer.from(data) : data }]);
}

function bucketUri(store: ObjectStore, prefix = ''): string {
  return `${store.uri.scheme}://${store.uri.bucket}${prefix ? `/${prefix}` : ''}`;
}

function task(name: string, mounts: Record<string, string>): string {
  const file = path.join(work, `${name}.yaml`);
  fs.writeFileSync(file, ['file_mounts:', ...Object.entries(mounts).map(([k, v]) => `  ${k}: ${v}`), 'run: "true"', ''].join('\n'));
  return file;
}

interface MountJson {
  key: string;
  bucket: { objectsListed: number; fetched: number; skipped: number; bytesFetched: number; deleted: number; refused: number };
}

function mountsOf(stdout: string): Map<string, MountJson['bucket']> {
  const report = JSON.parse(stdout) as { nodes: Array<{ mounts: MountJson[] }> };
  // Mounts are named as in the task's errors: `file_mounts.DST`.
  return new Map(report.nodes[0]!.mounts.map((m) => [m.key.replace(/^file_mounts\./, ''), m.bucket]));
}

/** Every file below `dir` whose bytes hold one of the secret values, as "file: NAME". */
function leaks(dir: string): string[] {
  const found: string[] = [];
  const visit = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) visit(p);
      else if (e.isFile()) {
        const bytes = fs.readFileSync(p);
        for (const [name, value] of Object.entries(SECRETS)) if (bytes.includes(value)) found.push(`${p}: ${name}`);
      }
    }
  };
  visit(dir);
  return found;
}

function leaksIn(text: string): string[] {
  return Object.entries(SECRETS)
    .filter(([, v]) => text.includes(v))
    .map(([k]) => k);
}

describe.skipIf(!!skip)('cloud URI file_mounts', () => {
  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-bucket-'));
    fs.chmodSync(work, 0o755);
    [s3, gcs] = await Promise.all([startS3Server(), startGcsServer()]);
  }, 60_000);
  afterAll(async () => {
    await Promise.all([s3?.stop(), gcs?.stop()]);
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  for (const scheme of ['s3', 'gs'] as const) {
    it(`${scheme}: prefix and object mounts land, re-fetch nothing unchanged, follow replacements and deletions`, async () => {
      const store = await freshBucket(scheme);
      const big = randomBytes(40 * 1024 * 1024 + 123);
      await put(store, 'data/a.txt', 'alpha\n');
      await put(store, 'data/sub/b.txt', 'bravo\n');
      await put(store, 'data/c.txt', 'charlie\n');
      await put(store, 'data/big.bin', big);
      await put(store, 'models/m.bin', 'weights');
      const home = path.join(work, `home-${scheme}`);
      const file = task(`t-${scheme}`, { '~/mnt/data': bucketUri(store, 'data'), '~/mnt/m.bin': bucketUri(store, 'models/m.bin') });

      const first = skysync(['push', `local:${home}`, file, '--json']);
      expect(first.stderr).toBe('');
      expect(first.code).toBe(0);
      let stats = mountsOf(first.stdout);
      expect(stats.get('~/mnt/data')).toMatchObject({ objectsListed: 4, fetched: 4, skipped: 0, bytesFetched: big.length + 6 + 6 + 8 });
      expect(stats.get('~/mnt/m.bin')).toMatchObject({ objectsListed: 1, fetched: 1 });
      const data = path.join(home, 'mnt/data');
      expect(fs.readFileSync(path.join(data, 'a.txt'), 'utf8')).toBe('alpha\n');
      expect(fs.readFileSync(path.join(data, 'sub/b.txt'), 'utf8')).toBe('bravo\n');
      expect(fs.readFileSync(path.join(data, 'big.bin')).equals(big)).toBe(true);
      expect(fs.readFileSync(path.join(home, 'mnt/m.bin'), 'utf8')).toBe('weights');

      // Nothing changed: listed, nothing fetched.
      const again = skysync(['push', `local:${home}`, file, '--json']);
      expect(again.code).toBe(0);
      stats = mountsOf(again.stdout);
      expect(stats.get('~/mnt/data')).toMatchObject({ fetched: 0, skipped: 4, bytesFetched: 0 });
      expect(stats.get('~/mnt/m.bin')).toMatchObject({ fetched: 0, skipped: 1 });
      // Without --json: a line per mount of what the node did.
      const said = skysync(['push', `local:${home}`, file]);
      expect(said.code).toBe(0);
      expect(said.stderr).toContain(`file_mounts.~/mnt/data -> ~/mnt/data: 4 objects listed, 0 fetched (0 B from ${bucketUri(store, 'data')}), 4 unchanged, 0 deleted (`);

      // Same size, new bytes: fetched (`aws s3 sync` keeps the stale file). A job changes c.txt and adds a file;
      // then b.txt and c.txt leave the bucket: b.txt goes, the job's c.txt and its own file stay.
      await put(store, 'data/a.txt', 'ALPHA\n');
      fs.writeFileSync(path.join(data, 'c.txt'), 'changed by a job\n');
      fs.writeFileSync(path.join(data, 'job-output.txt'), 'mine\n');
      await store.remove(['data/sub/b.txt', 'data/c.txt']);
      const third = skysync(['push', `local:${home}`, file, '--json']);
      expect(third.code).toBe(0);
      stats = mountsOf(third.stdout);
      expect(stats.get('~/mnt/data')).toMatchObject({ objectsListed: 2, fetched: 1, bytesFetched: 6, deleted: 1 });
      expect(fs.readFileSync(path.join(data, 'a.txt'), 'utf8')).toBe('ALPHA\n');
      expect(fs.existsSync(path.join(data, 'sub'))).toBe(false);
      expect(fs.readFileSync(path.join(data, 'c.txt'), 'utf8')).toBe('changed by a job\n');
      expect(fs.readFileSync(path.join(data, 'job-output.txt'), 'utf8')).toBe('mine\n');
      expect(JSON.parse(third.stdout).nodes[0].mounts[0].stats.kept).toEqual(['c.txt']);

      // --no-delete keeps SkyPilot's never-delete; without it, the next run removes what is still as placed.
      await store.remove(['data/a.txt']);
      const kept = skysync(['push', `local:${home}`, file, '--json', '--no-delete']);
      expect(kept.code).toBe(0);
      expect(fs.existsSync(path.join(data, 'a.txt'))).toBe(true);
      expect(skysync(['push', `local:${home}`, file, '--json']).code).toBe(0);
      expect(fs.existsSync(path.join(data, 'a.txt'))).toBe(false);

      expect(leaks(home)).toEqual([]);
      for (const r of [first, again, third, kept]) expect(leaksIn(r.stdout + r.stderr)).toEqual([]);
    }, 120_000);
  }

  it('refuses hostile keys one by one and writes nothing outside the destination', async () => {
    const store = await freshBucket('gs');
    for (const key of ['evil/../../escape.txt', 'evil//abs.txt', `evil/${'x'.repeat(300)}`, 'evil/a', 'evil/a/b.txt', 'evil/ok.txt', 'evil/dir/']) {
      await put(store, key, key.endsWith('/') ? '' : `content of ${key.length}`);
    }
    const home = path.join(work, 'home-hostile');
    const file = task('hostile', { '~/mnt/evil': bucketUri(store, 'evil') });
    const r = skysync(['push', `local:${home}`, file, '--json']);
    expect(r.code).not.toBe(0);
    expect(fs.existsSync(path.join(home, 'mnt/evil/ok.txt'))).toBe(true);
    expect(fs.existsSync(path.join(home, 'mnt/evil/a/b.txt'))).toBe(true);
    expect(fs.readdirSync(path.join(home, 'mnt/evil')).sort()).toEqual(['a', 'ok.txt']);
    expect(fs.existsSync(path.join(home, 'escape.txt'))).toBe(false);
    expect(fs.existsSync(path.join(home, 'mnt/escape.txt'))).toBe(false);
    const report = JSON.parse(r.stdout);
    const failed = report.nodes[0].mounts[0].stats.failed as Array<{ path: string; error: string }>;
    expect(failed.map((f) => f.path).sort()).toEqual(['../../escape.txt', '/abs.txt', 'a', 'x'.repeat(300)].sort());
    for (const f of failed) expect(f.error).toMatch(/^refused: /);
    expect(report.nodes[0].mounts[0].bucket.refused).toBe(4);
  }, 60_000);

  it('a missing bucket is one line naming the mount, and a non-zero exit', () => {
    const home = path.join(work, 'home-missing');
    const file = task('missing', { '~/mnt/nothing': 's3://no-such-bucket-here' });
    const r = skysync(['push', `local:${home}`, file]);
    expect(r.code).not.toBe(0);
    const lines = r.stderr
      .trim()
      .split('\n')
      .filter((l) => l.includes('no-such-bucket-here'));
    expect(lines.length).toBe(1);
    expect(lines[0]).toContain('~/mnt/nothing');
    expect(lines[0]).toMatch(/does not exist/);
  }, 60_000);

  for (const store of ['s3', 'gcs'] as const) {
    it(`a COPY Storage object (${store}) with a local source: uploaded with git's ignore rules, then fetched by the node; nothing moves the second time`, async () => {
      const bucket = `copy-${store}-${randomUUID().slice(0, 8)}`;
      const src = path.join(work, `copy-src-${store}`);
      fs.mkdirSync(path.join(src, 'sub/logs'), { recursive: true });
      fs.writeFileSync(path.join(src, '.gitignore'), '*.tmp\n');
      fs.writeFileSync(path.join(src, 'sub/.gitignore'), 'logs/\n!keep.tmp\n');
      fs.writeFileSync(path.join(src, 'a.txt'), 'alpha\n');
      fs.writeFileSync(path.join(src, 'x.tmp'), 'ignored\n');
      fs.writeFileSync(path.join(src, 'sub/keep.tmp'), 'kept by a negation\n');
      fs.writeFileSync(path.join(src, 'sub/logs/l.txt'), 'ignored directory\n');
      const file = path.join(work, `copy-${store}.yaml`);
      // SkyPilot's persistent (default true) is kept with the bucket skysync created: `storage ls` says it.
      const persistent = store === 'gcs' ? ['    persistent: false'] : [];
      fs.writeFileSync(
        file,
        ['file_mounts:', '  ~/ds:', `    name: ${bucket}`, `    source: ${src}`, `    store: ${store}`, '    mode: COPY', ...persistent, 'run: "true"', ''].join('\n'),
      );
      const home = path.join(work, `home-copy-${store}`);
      const first = skysync(['push', `local:${home}`, file, '--json']);
      expect(first.stderr).toBe('');
      expect(first.code).toBe(0);
      const mount = JSON.parse(first.stdout).nodes[0].mounts[0];
      expect(mount.upload).toMatchObject({ objectsUploaded: 4, bucketCreated: true });
      expect(mount.bucket).toMatchObject({ fetched: 4 });
      const listed: string[] = [];
      for await (const o of storeFor(`${store === 'gcs' ? 'gs' : 's3'}://${bucket}`).list('')) listed.push(o.key);
      expect(listed.sort()).toEqual(['.gitignore', 'a.txt', 'sub/.gitignore', 'sub/keep.tmp']);
      expect(fs.readFileSync(path.join(home, 'ds/sub/keep.tmp'), 'utf8')).toBe('kept by a negation\n');
      expect(fs.existsSync(path.join(home, 'ds/x.tmp'))).toBe(false);
      const created = JSON.parse(skysync(['storage', 'ls', '--json']).stdout) as Array<{ uri: string; persistent: boolean }>;
      expect(created.find((b) => b.uri.endsWith(`://${bucket}`))).toMatchObject({ persistent: store !== 'gcs' });

      const again = skysync(['push', `local:${home}`, file, '--json']);
      expect(again.code).toBe(0);
      const m2 = JSON.parse(again.stdout).nodes[0].mounts[0];
      expect(m2.upload).toMatchObject({ objectsUploaded: 0, bytesSent: 0 });
      expect(m2.bucket).toMatchObject({ fetched: 0, skipped: 4 });

      // A local deletion reaches the bucket and then the node.
      fs.rmSync(path.join(src, 'a.txt'));
      const third = skysync(['push', `local:${home}`, file, '--json']);
      expect(third.code).toBe(0);
      expect(JSON.parse(third.stdout).nodes[0].mounts[0].upload).toMatchObject({ objectsDeleted: 1 });
      expect(fs.existsSync(path.join(home, 'ds/a.txt'))).toBe(false);
      for (const r of [first, again, third]) expect(leaksIn(r.stdout + r.stderr)).toEqual([]);
      expect(leaks(home)).toEqual([]);
    }, 120_000);
  }

  describe.skipIf(!!sshSkipReason())('over SSH', () => {
    let cluster: SshCluster;
    beforeAll(async () => {
      cluster = await startNodes(1, { strictHostKeyChecking: 'no' });
    }, 60_000);
    afterAll(async () => {
      await cluster?.stop();
    });

    it('a node behind sshd fetches both stores itself, and no credential reaches its disk', async () => {
      const [s3Store, gcsStore] = await Promise.all([freshBucket('s3'), freshBucket('gs')]);
      await put(s3Store, 'ds/x.txt', 'from s3\n');
      await put(s3Store, 'ds/deep/y.txt', 'deeper\n');
      await put(gcsStore, 'w.bin', 'from gcs');
      const file = task('ssh', { data: bucketUri(s3Store, 'ds'), '~/w.bin': bucketUri(gcsStore, 'w.bin') });
      const node = cluster.nodes[0]!;
      const r = skysync(['-F', cluster.sshConfig, 'push', node.name, file, '--json']);
      expect(r.stderr).not.toMatch(/error/);
      expect(r.code).toBe(0);
      expect(fs.readFileSync(path.join(node.home, 'sky_workdir/data/x.txt'), 'utf8')).toBe('from s3\n');
      expect(fs.readFileSync(path.join(node.home, 'sky_workdir/data/deep/y.txt'), 'utf8')).toBe('deeper\n');
      expect(fs.readFileSync(path.join(node.home, 'w.bin'), 'utf8')).toBe('from gcs');
      const again = skysync(['-F', cluster.sshConfig, 'push', node.name, file, '--json']);
      expect(again.code).toBe(0);
      expect(mountsOf(again.stdout).get('data')).toMatchObject({ fetched: 0, skipped: 2 });
      // The agent's state (~/.skysync) is under the node's home too.
      expect(leaks(node.home)).toEqual([]);
      for (const out of [r, again]) expect(leaksIn(out.stdout + out.stderr)).toEqual([]);
    }, 120_000);
  });
});
