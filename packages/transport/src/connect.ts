// Opening an SSH connection the way the user's OpenSSH would: config already resolved (ssh-config/), keys and
// ssh-agent, known_hosts (known-hosts.ts), ProxyJump and ProxyCommand, keepalives. Plus the exec helpers that
// run over it.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { Duplex, type Readable } from 'node:stream';
import type { Client, ClientChannel, ConnectConfig } from 'ssh2';
import { trace } from '@skysync/protocol';
import { appendKnownHost, checkHostKey, hostKeyPolicy, mismatchMessage, revokedMessage, unknownMessage } from './known-hosts.js';
import { resolveHost, parseProxyJump, type ResolvedHost } from './ssh-config/index.js';
import { ConnectError } from './target.js';

/** ssh2 is loaded on first use: it costs a tenth of a second that local targets and --help never need. */
let ssh2Module: Promise<typeof import('ssh2')> | null = null;
async function loadSsh2(): Promise<typeof import('ssh2')> {
  ssh2Module ??= import('ssh2').then((m) => (m as unknown as { default?: typeof import('ssh2') }).default ?? m);
  return ssh2Module;
}

/** What connecting needs of the target's options. */
export interface ConnectOptions {
  /** `-F FILE` / SKYSYNC_SSH_CONFIG. */
  configFile?: string;
  log?: (msg: string) => void;
}

export interface Connected {
  client: Client;
  host: ResolvedHost;
}

function duplexFromChild(command: string): Duplex {
  const child = spawn('sh', ['-c', command], { stdio: ['pipe', 'pipe', 'inherit'] });
  const d = new Duplex({
    read() {
      child.stdout.resume();
    },
    write(chunk, _enc, cb) {
      child.stdin.write(chunk, cb);
    },
    final(cb) {
      child.stdin.end();
      cb();
    },
    destroy(err, cb) {
      child.kill();
      cb(err);
    },
  });
  child.stdout.on('data', (c: Buffer) => {
    if (!d.push(c)) child.stdout.pause();
  });
  child.stdout.on('end', () => d.push(null));
  child.on('error', (e) => d.destroy(e));
  return d;
}

function keyType(blob: Buffer): string {
  const n = blob.readUInt32BE(0);
  return blob.toString('latin1', 4, 4 + n);
}

function forwardOut(via: Client, host: string, port: number): Promise<Readable> {
  return new Promise<Readable>((resolve, reject) => via.forwardOut('127.0.0.1', 0, host, port, (err, st) => (err ? reject(err) : resolve(st))));
}

/** ssh -J a,b,c: connects to a, through it to b, through b to c; returns a stream through c to the target. */
async function jumpSocket(host: ResolvedHost, opts: ConnectOptions, depth: number, jumps: Client[]): Promise<Readable> {
  let via: Client | null = null;
  for (const hop of parseProxyJump(host.proxyJump!)) {
    const h = await resolveHost(hop.alias, { configFile: opts.configFile, user: hop.user, port: hop.port });
    h.proxyJump = null;
    if (via) {
      h.proxyCommand = null;
      via = (await connectHost(h, opts, depth + 1, await forwardOut(via, h.hostname, h.port))).client;
    } else {
      via = (await connectHost(h, opts, depth + 1)).client;
    }
    jumps.push(via);
  }
  return forwardOut(via!, host.hostname, host.port);
}

/** The keys to offer, in OpenSSH's order (the ssh-agent first); a missing or locked key is said in one line. */
function authMethods(host: ResolvedHost, utils: typeof import('ssh2')['utils']): { methods: NonNullable<ConnectConfig['authHandler']>; tried: string } {
  const identities: string[] = [];
  const encrypted: string[] = [];
  const keys: Buffer[] = [];
  for (const f of host.identityFiles) {
    let data: Buffer;
    try {
      data = fs.readFileSync(f);
    } catch {
      continue;
    }
    const parsed = utils.parseKey(data);
    if (parsed instanceof Error) {
      if (/encrypted|passphrase/i.test(parsed.message)) encrypted.push(f);
      continue;
    }
    identities.push(f);
    keys.push(data);
  }
  const agentSock = process.env.SSH_AUTH_SOCK && fs.existsSync(process.env.SSH_AUTH_SOCK) ? process.env.SSH_AUTH_SOCK : undefined;
  if (!keys.length && !agentSock) {
    if (encrypted.length) {
      throw new ConnectError(`${encrypted[0]} is passphrase-protected and no ssh-agent is running; start one and \`ssh-add ${encrypted[0]}\`, then retry`);
    }
    throw new ConnectError(`no SSH key for ${host.alias}: none of ${host.identityFiles.join(', ') || '~/.ssh/id_*'} exists and no ssh-agent is running`);
  }
  const methods: Array<{ type: 'publickey'; username: string; key: Buffer } | { type: 'agent'; username: string; agent: string }> = [];
  if (agentSock) methods.push({ type: 'agent', username: host.user, agent: agentSock });
  for (const key of keys) methods.push({ type: 'publickey', username: host.user, key });
  const tried = [agentSock ? 'the ssh-agent' : '', ...identities].filter(Boolean).join(', ');
  return { methods: methods as NonNullable<ConnectConfig['authHandler']>, tried };
}

/** Checks the server's key as OpenSSH would; a refusal's reason goes to `refused`, to become the error. */
function hostVerifier(host: ResolvedHost, opts: ConnectOptions, refused: (why: string) => void): ConnectConfig['hostVerifier'] {
  const policy = hostKeyPolicy(host);
  return (key: Buffer, verify: (ok: boolean) => void) => {
    const type = keyType(key);
    const { host: lookupHost, port: lookupPort } = policy.lookup;
    const check = checkHostKey({ host: lookupHost, port: lookupPort, keyType: type, key, files: policy.files });
    const action = policy.decide(check.status);
    const args = { host: lookupHost, port: lookupPort, keyType: type, key, file: check.file, line: check.line };
    if (action === 'accept') return verify(true);
    if (action === 'add') {
      appendKnownHost(policy.addTo!, lookupHost, lookupPort, type, key, { hash: policy.hash }).then(
        () => verify(true),
        () => verify(true),
      );
      return;
    }
    if (action === 'warn') {
      opts.log?.(`warning: ${mismatchMessage(args)} (continuing: StrictHostKeyChecking is ${host.strictHostKeyChecking})`);
      return verify(true);
    }
    refused(check.status === 'mismatch' ? mismatchMessage(args) : check.status === 'revoked' ? revokedMessage(args) : unknownMessage({ ...args, files: policy.files }));
    verify(false);
  };
}

/** ssh2's failure as one line that names the host and what to check. */
function connectFailure(e: Error & { level?: string; code?: string }, host: ResolvedHost, tried: string): ConnectError {
  const where = `${host.alias} (${host.hostname}:${host.port})`;
  if (e.level === 'client-authentication') return new ConnectError(`permission denied for ${host.user}@${host.hostname}:${host.port}: tried ${tried}`);
  if (e.level === 'client-timeout') return new ConnectError(`connection to ${where} timed out`);
  if (e.code === 'ECONNREFUSED') return new ConnectError(`cannot connect to ${where}: connection refused; is sshd running and the port right?`);
  return new ConnectError(`cannot connect to ${where}: ${e.message}`);
}

/** Opens an authenticated SSH connection to a resolved host (through its jump hosts or proxy command). */
export async function connectHost(host: ResolvedHost, opts: ConnectOptions, depth = 0, given?: Readable): Promise<Connected> {
  if (depth > 8) throw new ConnectError(`ProxyJump chain for ${host.alias} is too long (loop?)`);
  let sock: Readable | undefined;
  const jumps: Client[] = [];
  if (host.proxyJump && host.proxyJump !== 'none') sock = await jumpSocket(host, opts, depth, jumps);
  else if (host.proxyCommand && host.proxyCommand !== 'none') sock = duplexFromChild(host.proxyCommand);
  if (given) sock = given;
  // A direct connection starts before ssh2 is loaded (tens of milliseconds of compiling): the TCP handshake and
  // the server's banner arrive meanwhile.
  let earlyError: Error | null = null;
  if (!sock) {
    trace(`tcp connect to ${host.alias}`);
    const direct = net.connect({ host: host.hostname, port: host.port });
    direct.once('error', (e) => (earlyError ??= e));
    // ssh2 writes a packet in several pieces: with Nagle's algorithm each small exchange (key exchange,
    // authentication, opening a channel, the agent's first messages) waits for a delayed ACK, ~40 ms a round trip.
    direct.setNoDelay(true);
    sock = direct;
  }

  const { Client, utils } = await loadSsh2();
  const { methods, tried } = authMethods(host, utils);
  let hostKeyProblem: string | null = null;
  const client = new Client();
  const config: ConnectConfig = {
    host: host.hostname,
    port: host.port,
    username: host.user,
    sock,
    readyTimeout: host.connectTimeoutMs ?? 30_000,
    keepaliveInterval: host.serverAliveIntervalSec > 0 ? host.serverAliveIntervalSec * 1000 : 15_000,
    keepaliveCountMax: host.serverAliveCountMax || 3,
    authHandler: methods,
    hostVerifier: hostVerifier(host, opts, (why) => (hostKeyProblem = why)),
  };
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => {
      trace(`ssh ready: ${host.alias}`);
      resolve();
    });
    const failed = (e: Error & { level?: string; code?: string }): void => {
      for (const j of jumps) j.end();
      reject(hostKeyProblem ? new ConnectError(hostKeyProblem) : connectFailure(e, host, tried));
    };
    // The early socket may have failed before ssh2 listened to it.
    if (earlyError) return failed(earlyError);
    // `on`, not `once`: after a timeout ssh2 drops the socket and reports that too, and an 'error' nobody
    // listens to ends the process with a stack trace instead of the one line (the first error wins anyway).
    client.on('error', failed);
    client.connect(config);
  });
  // The jump hosts live as long as the connection through them.
  client.on('close', () => {
    for (const j of jumps.reverse()) j.end();
  });
  return { client, host };
}

export function exec(client: Client, command: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) => client.exec(command, (err, ch) => (err ? reject(err) : resolve(ch))));
}

/**
 * An ssh2 channel that closes drops the writes it still holds without calling them back: a sender waiting for
 * them to drain would wait forever (an agent killed mid-push). Turn that into an error its writer sees.
 */
export function failWritesOnClose(ch: ClientChannel, what: string): void {
  ch.once('close', () => {
    if (ch.writableLength > 0 || ch.writableNeedDrain) ch.emit('error', new Error(`${what} closed`));
  });
}

/** Runs a command to completion, feeding `input`, and returns its stdout, stderr and exit code. */
export async function run(client: Client, command: string, input?: Buffer[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const ch = await exec(client, command);
  let stdout = '';
  let stderr = '';
  ch.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  ch.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  let closed = false;
  const done = new Promise<number | null>((resolve) =>
    ch
      .on('exit', (code: number | null) => resolve(code))
      .on('close', () => {
        closed = true;
        resolve(null);
      }),
  );
  for (const b of input ?? []) {
    if (closed) break;
    // A channel that closes (the connection died) never drains: its close ends the wait too.
    if (!ch.write(b)) {
      await new Promise<void>((resolve) => {
        const go = (): void => {
          ch.off('drain', go);
          ch.off('close', go);
          resolve();
        };
        ch.once('drain', go);
        ch.once('close', go);
      });
    }
  }
  if (!closed) ch.end();
  const code = await done;
  return { code, stdout, stderr };
}
