// moto's S3 server for the storage bench, behind count-proxy.mjs: every tool is pointed at the proxy, which counts
// the bytes that reached the server. moto and awscli come from the venv scripts/install-test-servers.sh fills (as
// test/helpers/object-servers.ts uses them).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { BENCH_DIR, childEnv } from './common.mjs';

export function testServersDir() {
  return process.env.SKYSYNC_TEST_SERVERS ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'skysync-test', 'venv');
}

export const AWS_BIN = path.join(testServersDir(), 'bin', 'aws');
const MOTO_BIN = path.join(testServersDir(), 'bin', 'moto_server');

/** Why the bench cannot run here, or null. */
export function serversMissing() {
  const missing = [MOTO_BIN, AWS_BIN].filter((f) => !fs.existsSync(f));
  return missing.length ? `${missing.join(' and ')} missing; run scripts/install-test-servers.sh` : null;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitFor(url, child, output) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${url}: exited with ${child.exitCode}: ${output()}`);
    try {
      await fetch(url, { signal: AbortSignal.timeout(2000) });
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${url}: no answer within 60 s: ${output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * Output goes to a file, not a pipe: the bench blocks its event loop in spawnSync for minutes, and moto, which logs
 * every request, would block on a full pipe meanwhile (and every client with it).
 */
function start(cmd, args, env, logFile) {
  const fd = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', fd] });
  fs.closeSync(fd);
  const output = () => {
    try {
      return fs.readFileSync(logFile, 'utf8').slice(-4000);
    } catch {
      return '';
    }
  };
  return { child, output };
}

/**
 * Starts moto and the counting proxy in front of it. Returns { endpoint (the proxy), motoEndpoint, counts(),
 * reset(), stop() }. counts() and reset() are async: call them between runs, never during a spawnSync.
 */
export async function startCountedS3() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-bench-moto-'));
  const motoPort = await freePort();
  // Nothing of the caller's AWS setup reaches the server; moto accepts any credentials.
  const moto = start(MOTO_BIN, ['-H', '127.0.0.1', '-p', String(motoPort)], { PATH: process.env.PATH, HOME: dir }, path.join(dir, 'moto.log'));
  // moto's stdout is unused; drain it so a print cannot fill the pipe.
  moto.child.stdout.resume();
  const motoEndpoint = `http://127.0.0.1:${motoPort}`;
  await waitFor(`${motoEndpoint}/moto-api/`, moto.child, moto.output);

  // The proxy writes one line (its ports) on stdout and nothing after.
  const proxy = start(process.execPath, [path.join(BENCH_DIR, 'lib', 'count-proxy.mjs'), String(motoPort)], childEnv(), path.join(dir, 'proxy.log'));
  const ports = await new Promise((resolve, reject) => {
    let line = '';
    proxy.child.stdout.on('data', (c) => {
      line += c.toString('utf8');
      if (line.includes('\n')) resolve(JSON.parse(line.split('\n')[0]));
    });
    proxy.child.on('exit', (code) => reject(new Error(`count proxy exited with ${code}: ${proxy.output()}`)));
  });
  const control = `http://127.0.0.1:${ports.control}`;
  // Neither outlives the bench, even when it dies of an exception.
  process.on('exit', () => {
    for (const c of [proxy.child, moto.child]) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  });
  const stopChild = async (child) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };
  return {
    endpoint: `http://127.0.0.1:${ports.port}`,
    motoEndpoint,
    counts: async () => (await fetch(`${control}/counts`)).json(),
    reset: async () => (await fetch(`${control}/reset`, { method: 'POST' })).json(),
    async stop() {
      await Promise.all([stopChild(proxy.child), stopChild(moto.child)]);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
