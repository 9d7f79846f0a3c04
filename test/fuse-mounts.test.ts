// Storage MOUNT and MOUNT_CACHED end to end: the real CLI, real FUSE (rclone, started by the agent), moto's S3
// server and fake-gcs-server; local: nodes (this machine, root) and one node behind the real sshd harness (an
// unprivileged user, who may not open /dev/fuse: the refusal). The checks: both stores read and written through
// the mount; the barrier keeps the job's exit code and every object lands byte-exact; a mount that is already
// right is kept, a changed one replaced; a non-empty path refused with its contents intact; rclone killed with
// writes queued at random moments, then the next command completes them with none lost; a barrier with nothing
// pending; unmount; a bucket that vanishes while mounted; no client credential on the node's disk or in output.

import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type ObjectStore, parseStoreUri } from '@skysync/store';
import { GcsObjectStore, S3ObjectStore } from '@skysync/store/cloud';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GcsServer, type S3Server, objectServersSkipReason, startGcsServer, startS3Server } from './helpers/object-servers.js';
import { Rng } from './helpers/random.js';
import { sshSkipReason, startNodes, type SshCluster } from './helpers/sshd.js';

function fuseSkipReason(): string | null {
  if (process.platform !== 'linux') return 'FUSE mounts are tested on Linux';
  if (!fs.existsSync('/dev/fuse')) return 'no /dev/fuse';
  if (process.getuid?.() !== 0) return 'mounting on a local: node needs root here (/dev/fuse is root-only on this machine)';
  if (spawnSync('sh', ['-c', 'command -v rclone'], { stdio: 'ignore' }).status !== 0) return 'rclone is not installed (apt-get install rclone fuse3)';
  return objectServersSkipReason();
}

const skip = fuseSkipReason();
if (skip) console.log(`SKIP fuse-mounts.test.ts: ${skip}`);
const BIN = path.resolve('packages/cli/dist/bin.js');

// The client's long-lived keys (no session token): the nodes must get STS session credentials instead.
const SECRETS = {
  AWS_ACCESS_KEY_ID: `AKIA${randomBytes(8).toString('hex').toUpperCase()}`,
  AWS_SECRET_ACCESS_KEY: `secret-${randomBytes(16).toString('hex')}`,
};

let work: string;
let s3: S3Server;
let gcs: GcsServer;

function cliEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...SECRETS,
    AWS_ENDPOINT_URL: s3.endpoint,
    AWS_REGION: 'us-east-1',
    SKYSYNC_GCS_ENDPOINT: gcs.endpoint,
    GOOGLE_OAUTH_ACCESS_TOKEN: `ya29.${randomBytes(8).toString('hex')}`,
    GOOGLE_CLOUD_PROJECT: 'test',
    SKYSYNC_STATE_DIR: path.join(work, 'state'),
    SKYSYNC_CONTROL_PERSIST: '0',
    SSH_AUTH_SOCK: '',
  };
  delete env.AWS_SESSION_TOKEN;
  return env;
}

function skysync(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 300_000, cwd: work, env: cliEnv() });
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

async function objectBytes(store: ObjectStore, key: string): Promise<Buffer | null> {
  const head = await store.head(key);
  if (!head) return null;
  return head.size === 0 ? Buffer.alloc(0) : Buffer.from(await store.getRange(key, 0, head.size));
}

async function keys(store: ObjectStore, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(prefix)) out.push(o.key);
  return out.sort();
}

function task(name: string, mounts: Record<string, Record<string, string>>, run: string, setup?: string): string {
  const file = path.join(work, `${name}.yaml`);
  const lines = ['file_mounts:'];
  for (const [dst, fields] of Object.entries(mounts)) {
    lines.push(`  ${dst}:`);
    for (const [k, v] of Object.entries(fields)) lines.push(`    ${k}: ${v}`);
  }
  if (setup) lines.push('setup: |', ...setup.split('\n').map((l) => `  ${l}`));
  lines.push('run: |', ...run.split('\n').map((l) => `  ${l}`), '');
  fs.writeFileSync(file, lines.join('\n'));
  return file;
}

function mountedAt(p: string): boolean {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === p);
}

function rclonePidFor(home: string): number {
  const dir = path.join(home, '.skysync', 'mounts');
  for (const id of fs.readdirSync(dir)) {
    const rec = path.join(dir, id, 'record.json');
    if (fs.existsSync(rec)) return (JSON.parse(fs.readFileSync(rec, 'utf8')) as { pid: number }).pid;
  }
  throw new Error(`no mount record under ${dir}`);
}

/** Every file below `dir` (and every rclone's environment) holding one of the client's secret values. */
function leaks(dir: string): string[] {
  const found: string[] = [];
  const visit = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory() && !mountedAt(p)) visit(p);
      else if (e.isFile()) {
        const bytes = fs.readFileSync(p);
        for (const [name, value] of Object.entries(SECRETS)) if (bytes.includes(value)) found.push(`${p}: ${name}`);
      }
    }
  };
  visit(dir);
  return found;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe.skipIf(!!skip)('Storage MOUNT and MOUNT_CACHED', () => {
  const homes: string[] = [];
  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-fuse-'));
    fs.chmodSync(work, 0o755);
    [s3, gcs] = await Promise.all([startS3Server(), startGcsServer()]);
  }, 60_000);
  afterAll(async () => {
    // Whatever a failed test left mounted: unmounted, so the work directory can go.
    for (const home of homes) skysync(['unmount', `local:${home}`]);
    for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const p = line.split(' ')[4];
      if (p && work && p.startsWith(work)) spawnSync('umount', ['-l', p]);
    }
    await Promise.all([s3?.stop(), gcs?.stop()]);
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  function newHome(name: string): string {
    const home = path.join(work, name);
    homes.push(home);
    return home;
  }

  for (const scheme of ['s3', 'gs'] as const) {
    it(`MOUNT of ${scheme}: the job reads the bucket and its writes are in it when the command ends`, async () => {
      const store = await freshBucket(scheme);
      await store.put('in.txt', [{ kind: 'bytes', data: Buffer.from('from the bucket\n') }]);
      const home = newHome(`home-mount-${scheme}`);
      const mnt = path.join(work, `mnt-${scheme}`);
      const file = task(
        `mount-${scheme}`,
        { [mnt]: { source: `${scheme}://${store.uri.bucket}`, mode: 'MOUNT' } },
        `cat ${mnt}/in.txt\necho written > ${mnt}/out.txt\nprintf 'a' > ${mnt}/app.txt && printf 'b' >> ${mnt}/app.txt`,
      );
      const r = skysync(['launch', `local:${home}`, file]);
      expect(r.stderr).toContain(`mounted at ${mnt} (MOUNT)`);
      expect(r.stdout).toContain('from the bucket');
      expect(r.code).toBe(0);
      expect(mountedAt(mnt)).toBe(true);
      expect((await objectBytes(store, 'out.txt'))?.toString()).toBe('written\n');
      expect((await objectBytes(store, 'app.txt'))?.toString()).toBe('ab');

      // The same task again: the mount is right, and kept.
      const again = skysync(['launch', `local:${home}`, file]);
      expect(again.code).toBe(0);
      expect(again.stderr).toContain('still mounted');
      expect(leaks(home)).toEqual([]);
      for (const out of [r, again]) for (const v of Object.values(SECRETS)) expect(out.stdout + out.stderr).not.toContain(v);

      const down = skysync(['unmount', `local:${home}`, mnt]);
      expect(down.stderr).toContain(`${mnt}: unmounted`);
      expect(down.code).toBe(0);
      expect(mountedAt(mnt)).toBe(false);
      expect(fs.readdirSync(mnt)).toEqual([]);
    }, 180_000);
  }

  it('MOUNT_CACHED: the barrier waits for many files and a large one, keeps exit code 3, and every object is byte-exact', async () => {
    const store = await freshBucket('s3');
    const home = newHome('home-cached');
    const mnt = path.join(work, 'mnt-cached');
    const expected = path.join(work, 'expected-cached');
    fs.mkdirSync(expected);
    const run = [
      `mkdir -p ${mnt}/many`,
      `for i in $(seq 1 300); do head -c 10240 /dev/urandom > ${expected}/f$i; cp ${expected}/f$i ${mnt}/many/f$i; done`,
      `head -c 67108864 /dev/urandom > ${expected}/big.bin; cp ${expected}/big.bin ${mnt}/big.bin`,
      'exit 3',
    ].join('\n');
    const file = task('cached', { [mnt]: { name: store.uri.bucket, store: 's3', mode: 'MOUNT_CACHED' } }, run, `echo set up > ${mnt}/setup.txt`);
    const r = skysync(['launch', `local:${home}`, file, '--json']);
    expect(r.code).toBe(3);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toMatchObject({ exitCode: 3 });
    // Everything is in the bucket the moment the command returns.
    expect((await objectBytes(store, 'setup.txt'))?.toString()).toBe('set up\n');
    expect(sha((await objectBytes(store, 'big.bin'))!)).toBe(sha(fs.readFileSync(path.join(expected, 'big.bin'))));
    const many = await keys(store, 'many/');
    expect(many.length).toBe(300);
    for (let i = 1; i <= 300; i += 37) expect((await objectBytes(store, `many/f${i}`))!.equals(fs.readFileSync(path.join(expected, `f${i}`)))).toBe(true);

    // A barrier with nothing pending.
    const idle = skysync(['flush', `local:${home}`]);
    expect(idle.code).toBe(0);
    expect(idle.stderr).toContain('nothing left to upload');
    expect(leaks(home)).toEqual([]);
    // The node's rclone holds session credentials from STS, not the client's keys.
    const environ = fs.readFileSync(`/proc/${rclonePidFor(home)}/environ`, 'utf8');
    for (const v of Object.values(SECRETS)) expect(environ).not.toContain(v);
    expect(environ).toContain('AWS_SESSION_TOKEN=');
  }, 300_000);

  it('a detached job runs the barrier itself: its writes are in the bucket when it ends, and its exit code is kept', async () => {
    const store = await freshBucket('s3');
    const home = newHome('home-detached');
    const mnt = path.join(work, 'mnt-detached');
    const file = task('detached', { [mnt]: { source: `s3://${store.uri.bucket}`, mode: 'MOUNT_CACHED' } }, `head -c 3000000 /dev/urandom > ${mnt}/d.bin\nexit 4`);
    const r = skysync(['launch', '-d', `local:${home}`, file]);
    expect(r.code, r.stderr).toBe(0);
    const logs = skysync(['logs', `local:${home}`, '-f']);
    expect(logs.code).toBe(4);
    // The job ended after its barrier: the object is there the moment it is over.
    expect((await objectBytes(store, 'd.bin'))?.length).toBe(3000000);
    expect(skysync(['unmount', `local:${home}`]).code).toBe(0);
  }, 180_000);

  it('rclone killed with writes queued, at random moments: the next command uploads every closed file', async () => {
    const seed = Number(process.env.SKYSYNC_SEED ?? Date.now() % 2 ** 31);
    const rounds = Number(process.env.SKYSYNC_FUSE_KILLS ?? 4);
    const rng = new Rng(seed);
    const store = await freshBucket('s3');
    const home = newHome('home-kills');
    const mnt = path.join(work, 'mnt-kills');
    const file = task('kills', { [mnt]: { name: store.uri.bucket, store: 's3', mode: 'MOUNT_CACHED' } }, 'true');
    expect(skysync(['launch', `local:${home}`, file]).code).toBe(0);
    let lost = 0;
    let closed = 0;
    let agentKills = 0;
    try {
      for (let round = 0; round < rounds; round++) {
        const written = new Map<string, Buffer>();
        const killAfter = rng.int(40);
        for (let i = 0; i < 40; i++) {
          const data = randomBytes(i % 10 === 0 ? 3 * 1024 * 1024 : 4096);
          const name = `r${round}/f${i}`;
          try {
            fs.mkdirSync(path.join(mnt, `r${round}`), { recursive: true });
            fs.writeFileSync(path.join(mnt, name), data);
            written.set(name, data);
          } catch {
            // The mount is dead: this write was refused (not lost).
          }
          if (i === killAfter) process.kill(rclonePidFor(home), 'SIGKILL');
        }
        closed += written.size;
        if (round % 2 === 1) {
          // The agent that restarts the mount and waits for the uploads is killed too, at a random moment.
          const flush = spawn(process.execPath, [BIN, 'flush', `local:${home}`], { cwd: work, env: cliEnv(), stdio: 'ignore' });
          await new Promise((r) => setTimeout(r, 100 + rng.int(400)));
          spawnSync('pkill', ['-KILL', '-f', `agent.cjs fuse flush --home ${home}`]);
          await new Promise((r) => flush.once('close', r));
          agentKills++;
        }
        const r = skysync(['flush', `local:${home}`]);
        expect(r.code, r.stderr).toBe(0);
        for (const [name, data] of written) {
          const got = await objectBytes(store, name);
          if (!got?.equals(data)) {
            lost++;
            console.log(`lost: ${name} (${data.length} bytes written; the bucket has ${got ? got.length : 'nothing'}; killed after write ${killAfter})`);
          }
        }
        // The next command finds the mount working again.
        expect(mountedAt(mnt)).toBe(true);
      }
    } catch (e) {
      console.log(`fuse kill rounds failed: seed ${seed} (SKYSYNC_SEED=${seed} replays it)`);
      throw e;
    }
    console.log(`fuse kills: ${rounds} rclone kills, ${agentKills} agent kills, ${closed} closed files, ${lost} lost (seed ${seed})`);
    expect(lost).toBe(0);
  }, 600_000);

  it('a path that holds files and is not a mount is refused, with its contents intact; a changed source remounts', async () => {
    const [a, b] = await Promise.all([freshBucket('s3'), freshBucket('s3')]);
    const home = newHome('home-refuse');
    const mnt = path.join(work, 'mnt-refuse');
    fs.mkdirSync(mnt);
    fs.writeFileSync(path.join(mnt, 'mine.txt'), 'keep me');
    const file = task('refuse', { [mnt]: { source: `s3://${a.uri.bucket}`, mode: 'MOUNT' } }, 'true');
    const r = skysync(['launch', `local:${home}`, file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is not empty \(1 entry\) and not a mount; skysync never deletes what is there/);
    expect(
      r.stderr
        .trim()
        .split('\n')
        .filter((l) => l.includes('error')).length,
    ).toBe(1);
    expect(fs.readFileSync(path.join(mnt, 'mine.txt'), 'utf8')).toBe('keep me');
    expect(mountedAt(mnt)).toBe(false);

    fs.rmSync(path.join(mnt, 'mine.txt'));
    expect(skysync(['launch', `local:${home}`, file]).code).toBe(0);
    fs.writeFileSync(path.join(mnt, 'to-a.txt'), 'a');
    const other = task('refuse-b', { [mnt]: { source: `s3://${b.uri.bucket}`, mode: 'MOUNT' } }, 'true');
    const moved = skysync(['launch', `local:${home}`, other]);
    expect(moved.code).toBe(0);
    expect(moved.stderr).toContain(`s3://${b.uri.bucket} remounted at ${mnt}`);
    // What was written under the old mount went to the old bucket before it was replaced.
    expect((await objectBytes(a, 'to-a.txt'))?.toString()).toBe('a');
    expect(await keys(b)).toEqual([]);
    expect(skysync(['unmount', `local:${home}`]).code).toBe(0);
  }, 180_000);

  it('a bucket that vanishes while mounted: the barrier names the file that cannot go up, and keeps it queued', async () => {
    const store = await freshBucket('s3');
    const home = newHome('home-vanish');
    const mnt = path.join(work, 'mnt-vanish');
    const file = task('vanish', { [mnt]: { source: `s3://${store.uri.bucket}`, mode: 'MOUNT_CACHED' } }, 'true');
    expect(skysync(['launch', `local:${home}`, file]).code).toBe(0);
    await store.deleteBucket();
    fs.writeFileSync(path.join(mnt, 'orphan.txt'), 'nowhere to go');
    const r = skysync(['flush', `local:${home}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/orphan\.txt/);
    expect(r.stderr).toMatch(/stay queued on the node/);
    // Still there, still queued: the bucket back, the next flush completes it.
    await store.createBucket();
    const again = skysync(['flush', `local:${home}`]);
    expect(again.code, again.stderr).toBe(0);
    expect((await objectBytes(store, 'orphan.txt'))?.toString()).toBe('nowhere to go');
    expect(skysync(['unmount', `local:${home}`]).code).toBe(0);
  }, 300_000);

  it('a full cache disk: the job sees its write fail (not a silent loss), what fit goes up, and the barrier says so', async () => {
    const store = await freshBucket('s3');
    const home = newHome('home-full');
    // The node's home (the mount's cache is under it) on a disk of 24 MiB.
    fs.mkdirSync(home);
    expect(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', home]).status).toBe(0);
    try {
      const mnt = path.join(work, 'mnt-full');
      const run = `head -c 4096 /dev/urandom > ${mnt}/small.bin\nhead -c 41943040 /dev/zero > ${mnt}/too-big.bin`;
      const file = task('full', { [mnt]: { source: `s3://${store.uri.bucket}`, mode: 'MOUNT_CACHED' } }, run);
      const r = skysync(['launch', `local:${home}`, file]);
      // The job saw its write fail; its exit code is the command's.
      expect(r.code).not.toBe(0);
      expect(r.stderr + r.stdout).toMatch(/No space left on device|Input\/output error/);
      expect((await objectBytes(store, 'small.bin'))?.length).toBe(4096);
      // rclone sends up what it holds of a file whose write failed: the barrier says so, naming the file.
      expect(r.stderr).toMatch(/a job's write to too-big\.bin failed on the node \(no space left on device\); the bucket holds only what was written before it/);
      // Said once: the next flush has nothing to report.
      expect(skysync(['flush', `local:${home}`]).code).toBe(0);
      skysync(['unmount', `local:${home}`]);
    } finally {
      spawnSync('umount', ['-l', home]);
    }
  }, 180_000);

  describe.skipIf(!!sshSkipReason())('over SSH, as a user who may not use FUSE', () => {
    let cluster: SshCluster;
    beforeAll(async () => {
      cluster = await startNodes(1, { strictHostKeyChecking: 'no' });
    }, 60_000);
    afterAll(async () => {
      await cluster?.stop();
    });

    it('is refused in one line that suggests COPY, and leaves nothing mounted or created', async () => {
      const store = await freshBucket('s3');
      const node = cluster.nodes[0]!;
      const file = task('ssh-refused', { '~/ckpt': { source: `s3://${store.uri.bucket}`, mode: 'MOUNT_CACHED' } }, 'echo should not run');
      const r = skysync(['-F', cluster.sshConfig, 'launch', node.name, file]);
      expect(r.code).toBe(1);
      const errors = r.stderr.split('\n').filter((l) => l.includes('error'));
      expect(errors.length).toBe(1);
      expect(errors[0]).toMatch(/cannot mount s3:\/\/.* here: .*\/dev\/fuse.*; use mode: COPY instead/);
      expect(r.stdout).not.toContain('should not run');
      expect(fs.existsSync(path.join(node.home, 'ckpt'))).toBe(false);
      expect(leaks(node.home)).toEqual([]);
    }, 120_000);
  });
});
