#!/usr/bin/env node
// What a command costs in round trips over a plain `ssh true`, with the agent already installed.
//
// A wall time mixes round trips with CPU (key exchange, node starting on both ends), so the same commands run on
// the rig at two round-trip times, and the difference between the two runs divided by the difference of the RTTs
// counts the round trips each command waits for; CPU cancels out. Compared: OpenSSH's `ssh true`, and skysync's
// no-op push of a small workdir from a cold CLI (SKYSYNC_CONTROL_PERSIST=0: a new SSH connection, the agent
// started by one exec), both over the same rig. Needs root (the rig).
//
//   node bench/roundtrips.mjs [--rtt 20,200] [--reps 7]
//
// Writes bench/results/roundtrips.json and prints a markdown table.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CLI_BIN, RESULTS_DIR, buildInfo, childEnv, log, median } from './lib/common.mjs';
import { RigBusyError, up as rigUp } from './rig/rig.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return dflt;
  return args[i].includes('=') ? args[i].slice(args[i].indexOf('=') + 1) : args[i + 1];
};
const RTTS = String(opt('--rtt', '20,200')).split(',').map(Number);
const REPS = Number(opt('--reps', 7));
if (RTTS.length !== 2 || RTTS.some((x) => !(x > 0)) || RTTS[0] === RTTS[1]) {
  process.stderr.write('--rtt needs two different round-trip times in ms, for example 20,200\n');
  process.exit(2);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-rt-'));
const src = path.join(work, 'src');
fs.mkdirSync(path.join(src, 'pkg'), { recursive: true });
for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(src, 'pkg', `m${i}.py`), `# module ${i}\nprint(${i})\n`);

function timed(cmd, argv, env) {
  const t0 = performance.now();
  const r = spawnSync(cmd, argv, { encoding: 'utf8', env, timeout: 120_000 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (${r.status}): ${(r.stderr || '').trim().split('\n').pop()}`);
  return { ms, stdout: r.stdout };
}

const runs = [];
for (const rtt of RTTS) {
  let rig;
  try {
    rig = await rigUp({ rate: '1000mbit', rttMs: rtt, nodes: 1, log });
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    process.exit(e instanceof RigBusyError ? 75 : 1);
  }
  try {
    const cfg = rig.sshConfigHead;
    const env = childEnv({ SKYSYNC_STATE_DIR: path.join(work, `state-${rtt}`), SKYSYNC_CONTROL_PERSIST: '0', SKYSYNC_WATCH_PERSIST: '0' });
    const push = () => timed(process.execPath, [CLI_BIN, '-F', cfg, 'push', 'bench', '-w', src, '--json'], env);
    // Install the agent and place the workdir; then every push is a no-op with the agent there.
    push();
    push();
    const ssh = [];
    const sky = [];
    for (let i = 0; i < REPS; i++) {
      ssh.push(timed('ssh', ['-F', cfg, 'bench', 'true'], env).ms);
      const r = push();
      const stats = JSON.parse(r.stdout);
      if (stats.filesChanged !== 0) throw new Error(`a no-op push changed ${stats.filesChanged} files`);
      sky.push(r.ms);
    }
    runs.push({ rttMs: rtt, sshTrue: median(ssh), skysyncNoop: median(sky), samples: { ssh, sky } });
    log(`rtt ${rtt} ms: ssh true ${median(ssh).toFixed(0)} ms, skysync no-op push ${median(sky).toFixed(0)} ms`);
  } finally {
    rig.down({ log });
  }
}
fs.rmSync(work, { recursive: true, force: true });

const [a, b] = runs;
const span = b.rttMs - a.rttMs;
const rts = (k) => (b[k] - a[k]) / span;
const result = {
  name: 'roundtrips',
  date: new Date().toISOString(),
  build: buildInfo(),
  reps: REPS,
  runs,
  roundTrips: { sshTrue: rts('sshTrue'), skysyncNoop: rts('skysyncNoop') },
  extraRoundTrips: rts('skysyncNoop') - rts('sshTrue'),
  target: '<= 1 extra round trip over a plain `ssh true` (agent installed)',
};
result.verdict = result.extraRoundTrips <= 1 ? 'met' : '**MISSED**';
fs.writeFileSync(path.join(RESULTS_DIR, 'roundtrips.json'), JSON.stringify(result, null, 2) + '\n');

const f = (x) => x.toFixed(0);
process.stdout.write(
  [
    `## Round trips over \`ssh true\` (agent installed; cold CLI, no warm connection)`,
    '',
    `| RTT | ssh true | skysync no-op push |`,
    `|---|---|---|`,
    ...runs.map((r) => `| ${r.rttMs} ms | ${f(r.sshTrue)} ms | ${f(r.skysyncNoop)} ms |`),
    `| round trips (slope) | ${result.roundTrips.sshTrue.toFixed(2)} | ${result.roundTrips.skysyncNoop.toFixed(2)} |`,
    '',
    `Extra round trips: **${result.extraRoundTrips.toFixed(2)}** (target <= 1: ${result.verdict}). Median of ${REPS}.`,
    '',
  ].join('\n'),
);
