// Storage MOUNT_CACHED: skysync against what SkyPilot runs, on one moto S3 server, same run.
//
//   node bench/mount.mjs [--smoke] [--keep]
//
// 1. The barrier with nothing pending. skysync: `skysync flush local:HOME` (the whole command: process start,
//    the agent, one request to rclone). SkyPilot: its barrier as the brief describes it (task_codegen.py, run
//    after every job): 1 s, then every 10 s a look at the last "vfs cache: cleaned:" line of every rclone log until
//    it says nothing is in use or queued; written here from that description, over the same rclone log.
// 2. A job that writes 1000 files of 100 KiB and one 500 MiB file into the mount, then ends. skysync: the mount
//    of a MOUNT_CACHED Storage object (`skysync launch`), the job, then `skysync flush` (the barrier exec and launch
//    run after a job). SkyPilot: `rclone mount` with SkyPilot's MOUNT_CACHED flags, the same job, then its barrier.
//    For both: the time from the
//    job's end (a timestamp it writes outside the mount) to the moment every object is in the bucket with its size
//    (polled from here with ListObjectsV2), and to the moment the command or the barrier returns. Alternated, medians.
// Prints markdown on stdout, progress on stderr, writes bench/results/mount.json (mount-smoke.json).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import {
  CACHE_ROOT,
  CLI_BIN,
  REPO,
  buildInfo,
  childEnv,
  fmtMs,
  fmtRatio,
  log,
  machineInfo,
  median,
  nowMs,
  parseArgs,
  run,
  table,
  verdict,
  writeResults,
  MiB,
  KiB,
} from './lib/common.mjs';
import { serversMissing, startCountedS3 } from './lib/s3-server.mjs';

// The SDK's notice that later releases need Node 22 is noise here.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const flags = parseArgs(process.argv.slice(2));
if (flags.help) {
  process.stdout.write('usage: node bench/mount.mjs [--smoke] [--keep]\n');
  process.exit(0);
}
const smoke = flags.smoke;
const FILES = smoke ? 50 : 1000;
const FILE_SIZE = 100 * KiB;
const BIG = smoke ? 20 * MiB : 500 * MiB;
const IDLE_REPS = smoke ? 2 : 5;
const JOB_REPS = smoke ? 1 : 2;
const TARGETS = { idleBarrierMs: 500, jobEndToBucketRatio: 1 };

const missing = serversMissing();
if (missing) {
  process.stderr.write(`${missing}\n`);
  process.exit(2);
}
if (run('sh', ['-c', 'command -v rclone'], { allowFail: true }).status !== 0 || !fs.existsSync('/dev/fuse')) {
  process.stderr.write('rclone and /dev/fuse are needed (apt-get install rclone fuse3)\n');
  process.exit(2);
}

const runRoot = path.join(CACHE_ROOT, `mount-run-${Date.now().toString(36)}-${process.pid}`);
fs.mkdirSync(runRoot, { recursive: true });
const s3 = await startCountedS3();
const env = childEnv({
  AWS_ENDPOINT_URL: s3.endpoint,
  AWS_ACCESS_KEY_ID: 'bench',
  AWS_SECRET_ACCESS_KEY: 'bench',
  AWS_REGION: 'us-east-1',
  SKYSYNC_CONTROL_PERSIST: '0',
  SKYSYNC_STATE_DIR: path.join(runRoot, 'state'),
});
delete env.AWS_SESSION_TOKEN;
// The SDK the project already depends on (packages/store), not one of the bench's own.
const { CreateBucketCommand, ListObjectsV2Command, S3Client } = createRequire(path.join(REPO, 'packages', 'store', 'package.json'))('@aws-sdk/client-s3');
const client = new S3Client({ endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' } });

let bucketNo = 0;
async function newBucket() {
  const name = `mount-bench-${process.pid}-${bucketNo++}`;
  await client.send(new CreateBucketCommand({ Bucket: name }));
  return name;
}

/** Objects in the bucket with their sizes. */
async function listing(bucket) {
  const out = new Map();
  let token;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const o of page.Contents ?? []) out.set(o.Key, o.Size);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

function complete(objects) {
  if (objects.get('big.bin') !== BIG) return false;
  for (let i = 1; i <= FILES; i++) if (objects.get(`many/f${i}`) !== FILE_SIZE) return false;
  return true;
}

/** The job: the files from a prepared source (reading /dev/urandom is not what is measured), then its end time. */
function jobScript(mnt, src, marker) {
  return [`mkdir -p ${mnt}/many`, `cp ${src}/many/* ${mnt}/many/`, `cp ${src}/big.bin ${mnt}/big.bin`, `date +%s%N > ${marker}`].join('\n');
}

function prepareSource() {
  const src = path.join(runRoot, 'src');
  fs.mkdirSync(path.join(src, 'many'), { recursive: true });
  for (let i = 1; i <= FILES; i++) fs.writeFileSync(path.join(src, 'many', `f${i}`), Buffer.alloc(FILE_SIZE, i % 251));
  run('sh', ['-c', `head -c ${BIG} /dev/urandom > ${src}/big.bin`]);
  return src;
}

const jobEndMs = (marker) => Number(BigInt(fs.readFileSync(marker, 'utf8').trim()) / 1_000_000n);

/** Polls the bucket until the job's objects are all there; resolves with the wall clock (ms since epoch). */
async function untilInBucket(bucket, timeoutMs = 1_800_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (complete(await listing(bucket))) return Date.now();
    if (Date.now() > deadline) throw new Error(`${bucket}: objects missing after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function spawnAsync(cmd, args, opts) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr, endMs: Date.now() }));
  });
}

/** SkyPilot's barrier as described: 1 s, then every 10 s the last "cleaned:" line of each rclone log. */
function skypilotBarrier(logs) {
  const check = logs.map((l) => `tail -n 200 ${l} | grep 'vfs cache: cleaned:' | tail -n 1 | grep -q 'in use 0, to upload 0, uploading 0'`).join(' && ');
  return `sleep 1; while true; do sleep 10; if ${check}; then break; fi; done`;
}

const SKYPILOT_FLAGS = [
  '--allow-other',
  '--vfs-cache-mode',
  'full',
  '--dir-cache-time',
  '10s',
  '--vfs-cache-poll-interval',
  '10s',
  '--vfs-write-back',
  '1s',
  '--vfs-cache-max-size',
  '10G',
  '--vfs-fast-fingerprint',
];

function rcloneEnv() {
  const e = {
    ...env,
    RCLONE_CONFIG_SKY_TYPE: 's3',
    RCLONE_CONFIG_SKY_PROVIDER: 'Other',
    RCLONE_CONFIG_SKY_ENDPOINT: s3.endpoint,
    RCLONE_CONFIG_SKY_ACCESS_KEY_ID: 'bench',
    RCLONE_CONFIG_SKY_SECRET_ACCESS_KEY: 'bench',
    RCLONE_CONFIG_SKY_REGION: 'us-east-1',
    RCLONE_CONFIG_SKY_FORCE_PATH_STYLE: 'true',
    // moto answers a multipart upload with version id "null", then refuses a HEAD for it: both tools skip that HEAD.
    RCLONE_CONFIG_SKY_NO_HEAD: 'true',
  };
  delete e.AWS_CA_BUNDLE;
  return e;
}

async function skypilotRun(src, round) {
  const bucket = await newBucket();
  const dir = path.join(runRoot, `sky-${round}`);
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt, { recursive: true });
  const logFile = path.join(dir, 'rclone.log');
  const rclone = spawn('rclone', ['mount', `sky:${bucket}`, mnt, ...SKYPILOT_FLAGS, '--cache-dir', path.join(dir, 'cache'), '--log-file', logFile, '--log-level', 'INFO'], {
    env: rcloneEnv(),
    stdio: 'ignore',
    detached: true,
  });
  for (let i = 0; i < 200 && !fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${mnt} `); i++) await new Promise((r) => setTimeout(r, 50));
  const marker = path.join(dir, 'job-end');
  await spawnAsync('bash', ['-c', jobScript(mnt, src, marker)], { env });
  const end = jobEndMs(marker);
  const [landed, barrier] = await Promise.all([untilInBucket(bucket), spawnAsync('bash', ['-c', skypilotBarrier([logFile])], { env })]);
  run('fusermount', ['-uz', mnt], { allowFail: true });
  rclone.kill('SIGTERM');
  return { toBucketMs: landed - end, toReturnMs: barrier.endMs - end };
}

async function skysyncRun(src, round) {
  const bucket = await newBucket();
  const dir = path.join(runRoot, `skysync-${round}`);
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(dir, { recursive: true });
  const marker = path.join(dir, 'job-end');
  const task = path.join(dir, 'mount.yaml');
  fs.writeFileSync(task, ['file_mounts:', `  ${mnt}:`, `    name: ${bucket}`, '    store: s3', '    mode: MOUNT_CACHED', 'run: "true"', ''].join('\n'));
  const home = path.join(dir, 'home');
  const first = await spawnAsync(process.execPath, [CLI_BIN, 'launch', `local:${home}`, task], { env, cwd: dir });
  if (first.code !== 0) throw new Error(`skysync launch failed: ${first.stderr}`);
  // The same job as SkyPilot's, then the barrier exec and launch run after it (by hand: \`skysync flush\`).
  await spawnAsync('bash', ['-c', jobScript(mnt, src, marker)], { env });
  const end = jobEndMs(marker);
  const [landedAt, barrier] = await Promise.all([untilInBucket(bucket), spawnAsync(process.execPath, [CLI_BIN, 'flush', `local:${home}`], { env, cwd: dir })]);
  if (barrier.code !== 0) throw new Error(`skysync flush failed: ${barrier.stderr}`);
  if (!complete(await listing(bucket))) throw new Error('skysync flush returned before every object was in the bucket');
  const idle = [];
  if (round === 0) {
    for (let i = 0; i < IDLE_REPS; i++) {
      const t0 = nowMs();
      const f = await spawnAsync(process.execPath, [CLI_BIN, 'flush', `local:${home}`], { env, cwd: dir });
      if (f.code !== 0) throw new Error(`skysync flush failed: ${f.stderr}`);
      idle.push(nowMs() - t0);
    }
  }
  await spawnAsync(process.execPath, [CLI_BIN, 'unmount', `local:${home}`], { env, cwd: dir });
  return { toBucketMs: landedAt - end, toReturnMs: barrier.endMs - end, idle };
}

async function skypilotIdle() {
  const bucket = await newBucket();
  const dir = path.join(runRoot, 'sky-idle');
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt, { recursive: true });
  const logFile = path.join(dir, 'rclone.log');
  const rclone = spawn('rclone', ['mount', `sky:${bucket}`, mnt, ...SKYPILOT_FLAGS, '--cache-dir', path.join(dir, 'cache'), '--log-file', logFile, '--log-level', 'INFO'], {
    env: rcloneEnv(),
    stdio: 'ignore',
    detached: true,
  });
  // Its barrier reads a log line rclone writes every poll interval (10 s): wait for the first.
  for (let i = 0; i < 300 && !(fs.existsSync(logFile) && fs.readFileSync(logFile, 'utf8').includes('cleaned:')); i++) await new Promise((r) => setTimeout(r, 100));
  const t0 = nowMs();
  await spawnAsync('bash', ['-c', skypilotBarrier([logFile])], { env });
  const ms = nowMs() - t0;
  run('fusermount', ['-uz', mnt], { allowFail: true });
  rclone.kill('SIGTERM');
  return ms;
}

try {
  log(`preparing ${FILES} files of ${FILE_SIZE / KiB} KiB and one of ${BIG / MiB} MiB`);
  const src = prepareSource();
  const sky = [];
  const ours = [];
  for (let round = 0; round < JOB_REPS; round++) {
    // Alternated: whichever runs first after the other's cleanup does not always pay for it.
    const order = round % 2 ? ['skypilot', 'skysync'] : ['skysync', 'skypilot'];
    for (const who of order) {
      log(`round ${round + 1}: ${who}`);
      if (who === 'skysync') ours.push(await skysyncRun(src, round));
      else sky.push(await skypilotRun(src, round));
    }
  }
  log('SkyPilot barrier with nothing pending');
  const skyIdle = await skypilotIdle();
  const idleMs = median(ours[0].idle);
  const oursBucket = median(ours.map((r) => r.toBucketMs));
  const skyBucket = median(sky.map((r) => r.toBucketMs));
  const oursReturn = median(ours.map((r) => r.toReturnMs));
  const skyReturn = median(sky.map((r) => r.toReturnMs));
  const rows = [
    ['barrier, nothing pending (whole command)', fmtMs(idleMs), fmtMs(skyIdle), fmtRatio(skyIdle / idleMs), `<= 0.5 s: ${verdict(idleMs <= TARGETS.idleBarrierMs)}`],
    [
      `job end -> every object in the bucket (${FILES} x 100 KiB + ${BIG / MiB} MiB)`,
      fmtMs(oursBucket),
      fmtMs(skyBucket),
      fmtRatio(skyBucket / oursBucket),
      `no slower: ${verdict(oursBucket <= skyBucket * 1.05)}`,
    ],
    ['job end -> the barrier returns', fmtMs(oursReturn), fmtMs(skyReturn), fmtRatio(skyReturn / oursReturn), ''],
  ];
  process.stdout.write(`${table(['scenario', 'skysync', 'SkyPilot (rclone + its barrier)', 'ratio', 'target'], rows)}\n`);
  writeResults(smoke ? 'mount-smoke' : 'mount', {
    build: buildInfo(),
    machine: machineInfo(),
    files: FILES,
    fileSize: FILE_SIZE,
    big: BIG,
    ours,
    sky,
    skyIdleMs: skyIdle,
    idleMs,
    rows,
  });
} catch (e) {
  process.stderr.write(`bench/mount.mjs: ${e.stack ?? e}\n`);
  process.exitCode = 1;
} finally {
  // Whatever a failed run left mounted goes first, or nothing under it can be removed.
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const p = line.split(' ')[4];
    if (p?.startsWith(runRoot)) run('umount', ['-l', p], { allowFail: true });
  }
  run('pkill', ['-f', `rclone mount .* ${runRoot}`], { allowFail: true });
  await s3.stop();
  if (!flags.keep) fs.rmSync(runRoot, { recursive: true, force: true });
}
