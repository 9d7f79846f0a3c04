// Buckets: skysync against what SkyPilot runs, `aws s3 sync` (awscli from PyPI), on one moto S3 server, same run.
//
//   node bench/storage.mjs [--smoke] [--keep] [--only=upload,fetch]
//
// Workdir: bench/lib/workdir.mjs's (full: 35k source files, three 200 MiB binaries, ignored junk; --smoke: a few
// hundred files, 2 MiB binaries), copied into a never-used directory (this disk creates files slowly for minutes
// after mass deletes). Every tool talks to moto through bench/lib/count-proxy.mjs, which counts the bytes that
// reached the server and came back from it.
//
// Upload (Storage COPY with a local source):
//   skysync: `skysync push local:HOME task.yaml --json`, the task holding `~/ds: {name: B, source: SRC, store: s3,
//            mode: COPY}`. The push uploads, then the local node fetches the bucket into HOME/ds. "upload part" is
//            the time from the process's start to the trace line written when the upload ends (SKYSYNC_TRACE);
//            "whole push" is the wall time of the command (upload + the node's fetch).
//   aws:     `aws s3 sync --no-follow-symlinks --endpoint-url E SRC s3://B2` plus the `--exclude` patterns that
//            SkyPilot derives from the source's .gitignore, so both upload the same 35k files (checked).
// Node fetch (a `~/data: s3://B2` file_mount, B2 = the bucket aws filled, plain objects):
//   skysync: `skysync push local:HOME2 task.yaml --json` (the node is a local: target on this machine); wall time.
//   aws:     `aws s3 sync --no-follow-symlinks --endpoint-url E s3://B2 DST`; wall time.
// Repeated runs alternate the order; medians. Prints markdown on stdout, progress on stderr, writes
// bench/results/storage.json (storage-smoke.json). Exits non-zero when a step fails (not when a target is missed).

import fs from 'node:fs';
import path from 'node:path';
import {
  CACHE_ROOT,
  CLI_BIN,
  buildChanged,
  buildInfo,
  childEnv,
  fmtBytes,
  fmtMs,
  fmtRatio,
  log,
  machineInfo,
  median,
  parseArgs,
  rmrfInBackground,
  run,
  syncDisks,
  table,
  verdict,
  waitForQuiet,
  watchInterference,
  writeResults,
  MiB,
} from './lib/common.mjs';
import { insertByte } from './lib/gen.mjs';
import { AWS_BIN, serversMissing, startCountedS3 } from './lib/s3-server.mjs';
import { BINARIES, customSize, ensureWorkdir } from './lib/workdir.mjs';

const argv = process.argv.slice(2);
const filesArg = argv.find((a) => a.startsWith('--files='));
const flags = parseArgs(argv.filter((a) => a !== filesArg));
/** A subset of the full workdir (N source files, the same three 200 MiB binaries), for when moto is too slow. */
const subsetFiles = filesArg ? Number(filesArg.slice('--files='.length)) : null;
if (flags.help || (filesArg && !(subsetFiles > 0))) {
  process.stdout.write('usage: node bench/storage.mjs [--smoke] [--files=N] [--keep] [--only=upload,fetch]\n');
  process.exit(0);
}
const smoke = flags.smoke;
const NOOP_REPS = smoke ? 1 : 3;
const CHANGE_REPS = smoke ? 1 : 2;
const LONG = 3_600_000;
const TARGETS = { uploadNoopSpeedup: 10, insertBytesToServer: 16 * MiB, insertSpeedup: 5, fetchNoopSpeedup: 10, fetchChangedSpeedup: 2, firstNoSlower: 1 };
/** What SkyPilot passes for the workdir's .gitignore (bench/lib/workdir.mjs GITIGNORE), in aws's pattern syntax. */
const AWS_EXCLUDES = ['*__pycache__/*', '*.pyc', '*.log', 'data/*'];

const missing = serversMissing();
if (missing) {
  process.stderr.write(`${missing}\n`);
  process.exit(2);
}

const wd = smoke ? ensureWorkdir('smoke') : subsetFiles ? ensureWorkdir(`custom-${subsetFiles}f-200m`, customSize(subsetFiles, 200)) : ensureWorkdir('full');
const runRoot = path.join(CACHE_ROOT, `storage-run-${Date.now().toString(36)}-${process.pid}`);
const src = path.join(runRoot, 'src');
fs.mkdirSync(runRoot, { recursive: true });
log(`copying the workdir (${wd.counts.syncedFiles} synced files) to ${src}`);
run('cp', ['-a', `${wd.tree}/.`, src], { timeoutMs: LONG });
syncDisks();

const server = await startCountedS3();
const env = childEnv({
  AWS_ENDPOINT_URL: server.endpoint,
  AWS_ACCESS_KEY_ID: 'bench',
  AWS_SECRET_ACCESS_KEY: 'bench',
  AWS_DEFAULT_REGION: 'us-east-1',
  AWS_CONFIG_FILE: path.join(runRoot, 'no-aws-config'),
  AWS_SHARED_CREDENTIALS_FILE: path.join(runRoot, 'no-aws-credentials'),
  SKYSYNC_STATE_DIR: path.join(runRoot, 'sky-state'),
  SKYSYNC_TRACE: '1',
});
const results = {
  name: `storage${smoke ? '-smoke' : ''}${subsetFiles ? `.files-${subsetFiles}` : ''}${flags.only ? `.only-${flags.only.join('-')}` : ''}`,
  smoke,
  machine: { ...machineInfo(), awscli: run(AWS_BIN, ['--version'], { env }).stdout.trim() || null },
  workdir: { name: wd.name, counts: wd.counts },
  store: 'S3 (moto) only',
  targets: TARGETS,
  reps: { noop: NOOP_REPS, change: CHANGE_REPS },
  scenarios: {},
  cpuBusyBefore: {},
  otherCpuDuring: {},
  failures: [],
};
const sections = [];
const homes = new Set();
let counter = 0;
const fresh = (what) => path.join(runRoot, `${what}-${++counter}`);

// ---------------------------------------------------------------------------------------------------------------
// The two tools.

function writeTask(name, mounts) {
  const file = path.join(runRoot, `${name}.yaml`);
  fs.writeFileSync(file, ['file_mounts:', ...mounts, 'run: "true"', ''].join('\n'));
  return file;
}

/** `skysync push local:HOME TASK --json`, with the bytes the server saw. Returns { ms, uploadMs, stats, mount, wire }. */
async function skyPush(home, task) {
  homes.add(home);
  await server.reset();
  const r = run(process.execPath, [CLI_BIN, 'push', `local:${home}`, task, '--json'], { env, timeoutMs: LONG });
  const wire = await server.counts();
  const stats = JSON.parse(r.stdout.trim().split('\n').at(-1));
  const node = stats.nodes?.[0];
  if (!node || node.error) throw new Error(`skysync push failed on the node: ${JSON.stringify(node ?? stats).slice(0, 1000)}`);
  const mount = node.mounts?.[0];
  if (!mount?.bucket) throw new Error(`no bucket stats in --json: ${JSON.stringify(node).slice(0, 1000)}`);
  const traced = /\[trace \d+ \+(\d+)ms [^\]]*\] storage \S+ uploaded/.exec(r.stderr);
  return { ms: r.ms, uploadMs: traced ? Number(traced[1]) : null, mount, wire };
}

/** `aws s3 sync --no-follow-symlinks FROM TO` as SkyPilot runs it, with the bytes the server saw. */
async function awsSync(from, to, extra = []) {
  await server.reset();
  const r = run(AWS_BIN, ['s3', 'sync', '--no-follow-symlinks', ...extra, '--endpoint-url', server.endpoint, from, to], { env, timeoutMs: LONG });
  const wire = await server.counts();
  const lines = r.stdout.split(/\r|\n/);
  const moved = lines.filter((l) => /^(upload|download): /.test(l)).length;
  return { ms: r.ms, moved, wire };
}

const awsUpload = (bucket) =>
  awsSync(
    src,
    `s3://${bucket}`,
    AWS_EXCLUDES.flatMap((p) => ['--exclude', p]),
  );
const awsFetch = (bucket, dst) => awsSync(`s3://${bucket}`, dst);

function copyTask(bucket) {
  return writeTask(`copy-${bucket}`, ['  ~/ds:', `    name: ${bucket}`, `    source: ${src}`, '    store: s3', '    mode: COPY']);
}

function mountTask(bucket) {
  return writeTask(`mount-${bucket}`, [`  ~/data: s3://${bucket}`]);
}

/** Reads the source so the initial runs do not depend on what the page cache kept (it is evicted after ~1 min). */
function warmSource() {
  run('sh', ['-c', 'find . -type f -print0 | xargs -0 cat > /dev/null', 'sh'], { cwd: src, timeoutMs: LONG });
}

function countFiles(dir) {
  return Number(run('sh', ['-c', `find "${dir}" -type f | wc -l`]).stdout.trim());
}

function same(a, b) {
  if (run('cmp', ['--silent', a, b], { allowFail: true }).status !== 0) throw new Error(`${b} differs from ${a}`);
}

async function alternate(rep, fns) {
  for (const f of rep % 2 === 0 ? fns : [...fns].reverse()) await f();
}

async function scenario(name, fn) {
  if (flags.only && !flags.only.some((o) => name.startsWith(o))) return;
  results.cpuBusyBefore[name] = smoke ? null : await waitForQuiet({ maxMs: 10_000 });
  log(`${name} ...`);
  const others = watchInterference();
  try {
    results.scenarios[name] = await fn();
  } catch (e) {
    log(`FAILED ${name}: ${e.stack ?? e}`);
    results.failures.push({ scenario: name, error: String(e.message ?? e) });
    sections.push(`### ${name}\n\n**step failed:** ${String(e.message ?? e).split('\n')[0]}\n`);
  }
  results.otherCpuDuring[name] = others();
}

// ---------------------------------------------------------------------------------------------------------------
// Scenarios. The aws bucket, once filled, is also the bucket both tools fetch from.

const id = Date.now().toString(36);
const skyBucket = `bench-sky-${id}`;
const awsBucket = `bench-aws-${id}`;
const skyCopyTask = copyTask(skyBucket);
// SkyPilot creates the bucket (boto3) before it runs `aws s3 sync`; untimed here, while skysync's first upload
// includes creating its bucket.
run(AWS_BIN, ['s3', 'mb', '--endpoint-url', server.endpoint, `s3://${awsBucket}`], { env });
const skyCopyHome = fresh('sky-copy-home');
const synced = wd.counts.syncedFiles;
const upload = { first: null, noop: null, insert: null };

await scenario('upload-first', async () => {
  warmSource();
  const sky = await skyPush(skyCopyHome, skyCopyTask);
  log(`  skysync: upload ${fmtMs(sky.uploadMs)}, whole push ${fmtMs(sky.ms)}, ${sky.mount.upload?.objectsUploaded} objects, ${fmtBytes(sky.wire.toServer)} to the server`);
  warmSource();
  const aws = await awsUpload(awsBucket);
  log(`  aws: ${fmtMs(aws.ms)}, ${aws.moved} uploads, ${fmtBytes(aws.wire.toServer)} to the server`);
  if (sky.mount.upload?.objectsUploaded !== synced) throw new Error(`skysync uploaded ${sky.mount.upload?.objectsUploaded} objects, expected ${synced}`);
  if (aws.moved !== synced) throw new Error(`aws uploaded ${aws.moved} objects, expected ${synced} (the --exclude patterns do not match the .gitignore)`);
  if (countFiles(path.join(skyCopyHome, 'ds')) !== synced) throw new Error('the node did not receive every file');
  upload.first = { sky, aws };
  return upload.first;
});

await scenario('upload-noop', async () => {
  const sky = [];
  const aws = [];
  for (let rep = 0; rep < NOOP_REPS; rep++) {
    await alternate(rep, [async () => sky.push(await skyPush(skyCopyHome, skyCopyTask)), async () => aws.push(await awsUpload(awsBucket))]);
    const s = sky.at(-1);
    if (s.mount.upload.objectsUploaded !== 0 || s.mount.upload.bytesSent !== 0 || s.mount.bucket.fetched !== 0)
      throw new Error(`skysync moved data on a no-op: ${JSON.stringify(s.mount)}`);
    if (aws.at(-1).moved !== 0) throw new Error(`aws uploaded ${aws.at(-1).moved} objects on a no-op`);
    log(`  rep ${rep + 1}: skysync upload ${fmtMs(s.uploadMs)} (whole push ${fmtMs(s.ms)}), aws ${fmtMs(aws.at(-1).ms)}`);
  }
  upload.noop = { sky, aws };
  return upload.noop;
});

await scenario('upload-insert', async () => {
  const file = path.join(src, BINARIES.insert);
  const sky = [];
  const aws = [];
  for (let rep = 0; rep < CHANGE_REPS; rep++) {
    insertByte(file, Math.floor(fs.statSync(file).size / 2) + 7 * rep, 0x41 + rep);
    syncDisks();
    await alternate(rep, [async () => sky.push(await skyPush(skyCopyHome, skyCopyTask)), async () => aws.push(await awsUpload(awsBucket))]);
    same(file, path.join(skyCopyHome, 'ds', BINARIES.insert));
    if (aws.at(-1).moved !== 1) throw new Error(`aws uploaded ${aws.at(-1).moved} objects, expected 1`);
    const s = sky.at(-1);
    log(
      `  rep ${rep + 1}: skysync upload ${fmtMs(s.uploadMs)} (whole push ${fmtMs(s.ms)}), ${fmtBytes(s.wire.toServer)} to the server (own count ${fmtBytes(s.mount.upload.bytesSent)} sent, ${fmtBytes(s.mount.upload.bytesCopied)} copied); aws ${fmtMs(aws.at(-1).ms)}, ${fmtBytes(aws.at(-1).wire.toServer)}`,
    );
  }
  upload.insert = { sky, aws };
  return upload.insert;
});

const fetchTask = mountTask(awsBucket);
const fetchHome = fresh('sky-fetch-home');
const awsFetchDst = fresh('aws-fetch-dst');
const fetched = { first: null, noop: null, changed: null };
if (!upload.first && !(flags.only && !flags.only.some((o) => 'fetch'.startsWith(o) || o.startsWith('fetch')))) {
  log(`filling ${awsBucket} (untimed; the upload scenarios did not run)`);
  try {
    await awsUpload(awsBucket);
  } catch (e) {
    results.failures.push({ scenario: 'fill the bucket', error: String(e.message ?? e) });
  }
}

await scenario('fetch-first', async () => {
  const sky = await skyPush(fetchHome, fetchTask);
  log(`  skysync: ${fmtMs(sky.ms)}, ${sky.mount.bucket.fetched} objects, ${fmtBytes(sky.wire.fromServer)} from the server`);
  const aws = await awsFetch(awsBucket, awsFetchDst);
  log(`  aws: ${fmtMs(aws.ms)}, ${aws.moved} downloads, ${fmtBytes(aws.wire.fromServer)} from the server`);
  for (const dir of [path.join(fetchHome, 'data'), awsFetchDst]) if (countFiles(dir) !== synced) throw new Error(`${dir}: ${countFiles(dir)} files, expected ${synced}`);
  fetched.first = { sky, aws };
  return fetched.first;
});

await scenario('fetch-noop', async () => {
  const sky = [];
  const aws = [];
  for (let rep = 0; rep < NOOP_REPS; rep++) {
    await alternate(rep, [async () => sky.push(await skyPush(fetchHome, fetchTask)), async () => aws.push(await awsFetch(awsBucket, awsFetchDst))]);
    if (sky.at(-1).mount.bucket.fetched !== 0) throw new Error(`skysync fetched ${sky.at(-1).mount.bucket.fetched} objects on a no-op`);
    if (aws.at(-1).moved !== 0) throw new Error(`aws downloaded ${aws.at(-1).moved} objects on a no-op`);
    log(`  rep ${rep + 1}: skysync ${fmtMs(sky.at(-1).ms)}, aws ${fmtMs(aws.at(-1).ms)}`);
  }
  fetched.noop = { sky, aws };
  return fetched.noop;
});

await scenario('fetch-changed', async () => {
  // One large object replaced in the bucket (a byte inserted, so its size changes: aws compares size and time only,
  // and would miss a same-size replacement, which would make it both faster and wrong).
  const key = BINARIES.checkpoint;
  const local = path.join(runRoot, 'changed.bin');
  fs.copyFileSync(path.join(src, key), local);
  const sky = [];
  const aws = [];
  for (let rep = 0; rep < CHANGE_REPS; rep++) {
    insertByte(local, Math.floor(fs.statSync(local).size / 3) + rep, 0x61 + rep);
    run(AWS_BIN, ['s3', 'cp', '--only-show-errors', '--endpoint-url', server.endpoint, local, `s3://${awsBucket}/${key}`], { env, timeoutMs: LONG });
    await alternate(rep, [async () => sky.push(await skyPush(fetchHome, fetchTask)), async () => aws.push(await awsFetch(awsBucket, awsFetchDst))]);
    same(local, path.join(fetchHome, 'data', key));
    same(local, path.join(awsFetchDst, key));
    log(`  rep ${rep + 1}: skysync ${fmtMs(sky.at(-1).ms)} (${sky.at(-1).mount.bucket.fetched} fetched), aws ${fmtMs(aws.at(-1).ms)} (${aws.at(-1).moved} downloaded)`);
  }
  fetched.changed = { sky, aws };
  return fetched.changed;
});

// ---------------------------------------------------------------------------------------------------------------
// Report.

const med = (xs, f) => median(xs.map(f));
const rows = [];
const summary = [];
function row(what, skyMs, awsMs, target, extra = {}) {
  const speedup = awsMs / skyMs;
  const met = target === null ? null : speedup >= target;
  summary.push({ scenario: what, skyMs, awsMs, speedup, target, met, ...extra });
  return [what, fmtMs(skyMs), fmtMs(awsMs), fmtRatio(speedup), extra.skyWire ?? '', extra.awsWire ?? '', target === null ? '' : `>= ${target}x: ${verdict(met)}`];
}
const wireUp = (xs) => fmtBytes(med(xs, (x) => x.wire.toServer));
const wireDown = (xs) => fmtBytes(med(xs, (x) => x.wire.fromServer));

if (upload.first) {
  const { sky, aws } = upload.first;
  rows.push(
    row(`upload, first (${synced} files)`, sky.uploadMs, aws.ms, TARGETS.firstNoSlower, {
      skyWire: `${fmtBytes(sky.wire.toServer)} up (whole push ${fmtMs(sky.ms)})`,
      awsWire: `${fmtBytes(aws.wire.toServer)} up`,
    }),
  );
}
if (upload.noop) {
  const { sky, aws } = upload.noop;
  rows.push(
    row(
      'upload, nothing changed',
      med(sky, (s) => s.uploadMs),
      med(aws, (a) => a.ms),
      TARGETS.uploadNoopSpeedup,
      { skyWire: `${wireUp(sky)} up (whole push ${fmtMs(med(sky, (s) => s.ms))})`, awsWire: `${wireUp(aws)} up` },
    ),
  );
}
if (upload.insert) {
  const { sky, aws } = upload.insert;
  const toServer = med(sky, (s) => s.wire.toServer);
  const r = row(
    `upload, 1 byte inserted in a ${fmtBytes(fs.statSync(path.join(src, BINARIES.insert)).size)} file`,
    med(sky, (s) => s.uploadMs),
    med(aws, (a) => a.ms),
    TARGETS.insertSpeedup,
    {
      skyWire: `${fmtBytes(toServer)} up (copied in the bucket: ${fmtBytes(med(sky, (s) => s.mount.upload.bytesCopied))}; whole push ${fmtMs(med(sky, (s) => s.ms))})`,
      awsWire: `${wireUp(aws)} up`,
      bytesToServer: toServer,
      bytesMet: toServer <= TARGETS.insertBytesToServer,
    },
  );
  r[6] += `; <= ${fmtBytes(TARGETS.insertBytesToServer)} to the server: ${verdict(toServer <= TARGETS.insertBytesToServer)}`;
  rows.push(r);
}
if (fetched.first) {
  const { sky, aws } = fetched.first;
  rows.push(
    row(`node fetch, first (${synced} objects)`, sky.ms, aws.ms, TARGETS.firstNoSlower, {
      skyWire: `${fmtBytes(sky.wire.fromServer)} down`,
      awsWire: `${fmtBytes(aws.wire.fromServer)} down`,
    }),
  );
}
if (fetched.noop) {
  const { sky, aws } = fetched.noop;
  rows.push(
    row(
      'node fetch, nothing changed',
      med(sky, (s) => s.ms),
      med(aws, (a) => a.ms),
      TARGETS.fetchNoopSpeedup,
      { skyWire: `${wireDown(sky)} down`, awsWire: `${wireDown(aws)} down` },
    ),
  );
}
if (fetched.changed) {
  const { sky, aws } = fetched.changed;
  rows.push(
    row(
      'node fetch, one 200 MiB object changed'.replace('200 MiB', fmtBytes(wd.want.spec.binMiB * MiB)),
      med(sky, (s) => s.ms),
      med(aws, (a) => a.ms),
      TARGETS.fetchChangedSpeedup,
      { skyWire: `${wireDown(sky)} down`, awsWire: `${wireDown(aws)} down` },
    ),
  );
}

results.summary = summary;
results.buildAtEnd = buildInfo();
const pct = (v) => (v === null || v === undefined ? 'n/a' : `${(v * 100).toFixed(0)}%`);
const m = results.machine;
const header =
  `## Buckets: skysync vs aws s3 sync${smoke ? ' (smoke)' : ''} (moto S3 on 127.0.0.1; medians of ${NOOP_REPS} no-op / ${CHANGE_REPS} change runs, alternating order)\n\n` +
  `${m.cpus?.count ?? '?'} × ${m.cpus?.model ?? 'cpu'}, node ${m.node}, ${m.awscli}, build ${m.build.head} (+${m.build.dirtyFiles} modified files). ` +
  `Workdir: ${synced} synced files (${fmtBytes(wd.counts.syncedBytes)}) and ${wd.counts.ignoredFiles} ignored. S3 only (moto). ` +
  'Upload: skysync time = process start to the end of the upload inside `skysync push local:HOME task.yaml` (a COPY Storage object; the push then also fetches into the node, "whole push"); ' +
  'aws = `aws s3 sync --no-follow-symlinks SRC s3://B` with excludes for the .gitignore. Node fetch: skysync = whole `skysync push` of a task with `~/data: s3://B` to a local: node; aws = `aws s3 sync --no-follow-symlinks s3://B DST`. ' +
  'Bytes are counted by a proxy in front of moto (requests up, responses down, headers included).\n';
process.stdout.write(
  [
    header,
    table(['scenario', 'skysync', 'aws s3 sync', 'aws / skysync', 'skysync bytes', 'aws bytes', 'target'], rows),
    '',
    ...sections,
    buildChanged(results.buildAtEnd, m.build) ? '\n**Warning:** the build changed during this run; re-run.' : '',
    `\nCPU taken by other processes on this shared machine (share of all cores): ${Object.keys(results.otherCpuDuring)
      .map((k) => `${k} ${pct(results.cpuBusyBefore[k])} before / ${pct(results.otherCpuDuring[k])} during`)
      .join(', ')}.`,
  ].join('\n') + '\n',
);
const out = writeResults(results.name, results);
log(`wrote ${out}`);

for (const home of homes) run(process.execPath, [CLI_BIN, 'disconnect', `local:${home}`], { env, allowFail: true });
await server.stop();
if (!flags.keep) rmrfInBackground(runRoot);
if (results.failures.length) {
  log(`${results.failures.length} scenario(s) failed: ${results.failures.map((f) => f.scenario).join(', ')}`);
  process.exitCode = 1;
}
