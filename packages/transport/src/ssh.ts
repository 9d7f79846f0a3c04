// SSH targets: reach the host the way the user's OpenSSH would (config, keys, ssh-agent, known_hosts,
// ProxyJump, ProxyCommand, keepalives), then start the agent with one exec. When the agent is missing, the same
// exec reports the platform instead, the bundle is uploaded over the same connection and the exec is retried.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { Duplex, PassThrough, type Readable } from 'node:stream';
import type { Client, ClientChannel, ConnectConfig } from 'ssh2';

/** ssh2 is loaded on first use: it costs a tenth of a second that local targets and --help never need. */
let ssh2Module: Promise<typeof import('ssh2')> | null = null;
async function loadSsh2(): Promise<typeof import('ssh2')> {
  ssh2Module ??= import('ssh2').then((m) => ((m as unknown as { default?: typeof import('ssh2') }).default ?? m));
  return ssh2Module;
}
import { MAGIC, trace } from '@skysync/protocol';
import { agentBundlePath, nativeAddonPath } from './local.js';
import { resolveHost, parseProxyJump, type ResolvedHost } from './ssh-config.js';
import { appendKnownHost, checkHostKey, hostKeyPolicy, mismatchMessage, revokedMessage, shellQuote, unknownMessage } from './known-hosts.js';
import { ConnectError, NoAgentError, type AgentChannel, type RemoteProcess, type RemoteSocket, type Target } from './target.js';
import { ControlGone, controlAgent, controlExec, controlSocketStream, controlShutdown, controlSocketPath, ensureControlDir, persistSeconds, spawnControlDaemon } from './control.js';

/** Bumped when the background process's socket protocol changes, so old daemons are never asked. */
const CONTROL_VERSION = 3;

export interface SshTargetOptions {
  /** `-F FILE` / SKYSYNC_SSH_CONFIG. */
  configFile?: string;
  log?: (msg: string) => void;
  /** Provision a Node runtime into ~/.skysync/node when the remote has none (default true). */
  installNode?: boolean;
  /** Where the remote downloads Node from; `{version}`, `{os}`, `{arch}` are filled in. */
  nodeUrl?: string;
  /** Use and leave behind warm connections (default: unless SKYSYNC_CONTROL_PERSIST=0). */
  control?: boolean;
}

/** The official distribution, for the Node version this client runs on. */
export const DEFAULT_NODE_URL = 'https://nodejs.org/dist/{version}/node-{version}-{os}-{arch}.tar.gz';

/**
 * Provisions Node into ~/.skysync/node on the remote: downloaded there (curl or wget, then tar) into a temp
 * directory renamed into place; or, when that fails and the platforms match, this machine's own binary uploaded
 * over the same connection. Returns what was done, for one line of output.
 */
async function provisionNode(client: Client, probe: { os: string; arch: string }, opts: SshTargetOptions): Promise<string | null> {
  const url = (opts.nodeUrl ?? process.env.SKYSYNC_NODE_URL ?? DEFAULT_NODE_URL)
    .replaceAll('{version}', process.version)
    .replaceAll('{os}', probe.os)
    .replaceAll('{arch}', nodeArch(probe.arch));
  const untar = url.endsWith('.xz') ? 'tar -xJf -' : 'tar -xzf -';
  const download = [
    'set -e',
    'd="$HOME/.skysync/node"; t="$HOME/.skysync/.node.$$.tmp"',
    'rm -rf "$t"; mkdir -p "$t"',
    `if command -v curl >/dev/null 2>&1; then curl -fsSL --connect-timeout 10 --max-time 300 "$1"; else wget -q -T 10 -O - "$1"; fi | (cd "$t" && ${untar} --strip-components=1)`,
    '"$t/bin/node" --version >/dev/null',
    'rm -rf "$d"; mv "$t" "$d"',
  ].join('; ');
  const r = await run(client, `sh -c ${shellQuote(download)} skysync-node ${shellQuote(url)}`);
  if (r.code === 0) return `downloaded Node ${process.version} from ${url}`;
  if (probe.os === os.platform() && nodeArch(probe.arch) === os.arch()) {
    const binary = fs.readFileSync(process.execPath);
    const upload = [
      'set -e',
      'd="$HOME/.skysync/node"; t="$HOME/.skysync/.node.$$.tmp"',
      'rm -rf "$t"; mkdir -p "$t/bin"',
      'head -c $1 > "$t/bin/node"; chmod 755 "$t/bin/node"',
      '"$t/bin/node" --version >/dev/null',
      'rm -rf "$d"; mv "$t" "$d"',
    ].join('; ');
    const u = await run(client, `sh -c ${shellQuote(upload)} skysync-node ${binary.length}`, [binary]);
    if (u.code === 0) return `uploaded this machine's Node ${process.version} (download from ${url} failed: ${(r.stderr.trim().split('\n').pop() ?? '').slice(0, 120) || `exit ${r.code}`})`;
  }
  return null;
}

const PROBE = 'SKYSYNC-PROBE';
const MIN_NODE_MAJOR = 18;

/** The agent bundle and its content hash: the remote file name, so versions never collide. */
export function agentBundle(): { file: string; hash: string } {
  const file = agentBundlePath();
  const meta = path.join(path.dirname(file), 'agent.json');
  const hash = (JSON.parse(fs.readFileSync(meta, 'utf8')) as { hash: string }).hash;
  return { file, hash };
}

/**
 * Settings the agent takes from the client's environment: tracing, and how long the watch of a destination
 * outlives the agent (SKYSYNC_WATCH_PERSIST=0 leaves nothing behind on the nodes either). Whole numbers only: they
 * go into a shell line.
 */
function agentEnv(): string {
  const watch = process.env.SKYSYNC_WATCH_PERSIST;
  return [process.env.SKYSYNC_TRACE ? 'SKYSYNC_TRACE=1 ' : '', watch && /^\d{1,9}$/.test(watch) ? `SKYSYNC_WATCH_PERSIST=${watch} ` : ''].join('');
}

/** Finds node and starts the agent when it is installed; otherwise prints the probe line (and exits). */
function startScript(hash: string): string {
  return [
    `A="$HOME/.skysync/agent/${hash}.cjs"`,
    'N=""',
    'for c in "$HOME/.skysync/node/bin/node" node nodejs; do if command -v "$c" >/dev/null 2>&1; then N="$c"; break; fi; done',
    `if [ -n "$N" ] && [ -f "$A" ]; then ${agentEnv()}exec "$N" "$A" serve; fi`,
    `V=none; if [ -n "$N" ]; then V=$("$N" --version 2>/dev/null || echo none); fi`,
    'G=raw; if command -v gzip >/dev/null 2>&1; then G=gz; fi',
    `printf '${PROBE} %s %s %s %s\\n' "$(uname -s)" "$(uname -m)" "$V" "$G"`,
  ].join('; ');
}

/** One shell line, run by the remote login shell: start the agent if it is installed, else say what is there. */
export function bootstrapCommand(hash: string): string {
  return `sh -c ${shellQuote(startScript(hash))}`;
}

/**
 * Installs the agent from stdin (`$1` bytes of bundle, then `$2` bytes of addon; gzip'ed when `gz`) and starts it
 * in the same exec, so an install costs no extra round trips. Each file goes into a temp file and is renamed into
 * place (two installing clients cannot corrupt each other); versions not used for a day are pruned.
 */
export function installCommand(hash: string, withAddon: boolean, gz: boolean): string {
  const dir = '"$HOME/.skysync/agent"';
  const tmp = `"$HOME/.skysync/agent/.${hash}.$$.tmp"`;
  // `head -c` reads exactly its count, leaving the rest of stdin (the addon, then the protocol) to what follows.
  const take = (n: string, to: string): string => (gz ? `head -c ${n} | gzip -dc > ${to}` : `head -c ${n} > ${to}`);
  const parts = ['umask 077', `mkdir -p ${dir}`, take('$1', tmp), `mv -f ${tmp} "$HOME/.skysync/agent/${hash}.cjs"`];
  // The addon is named after the agent it was built with: another skysync version's agent never loads it.
  if (withAddon) parts.push(take('$2', `${tmp}.node`), `mv -f ${tmp}.node "$HOME/.skysync/agent/${hash}.node"`);
  const install = parts.join(' && ');
  const prune = `find ${dir} -maxdepth 1 \\( -name '*.cjs' -o -name '*.node' \\) ! -name '${hash}.*' -mtime +1 -delete 2>/dev/null`;
  const failed = `rm -f ${tmp} ${tmp}.node; echo "skysync: installing the agent failed" >&2; exit 97`;
  return `{ ${install}; } || { ${failed}; }; ${prune}; ${startScript(hash)}`;
}

const uploads = new Map<string, Promise<Buffer>>();
/** The agent's files as uploaded: gzip'ed (fast level: the link is the cost) once per process, for every node. */
function uploadFiles(bundle: string, addon: string | null, gz: boolean): Promise<Buffer[]> {
  const one = (f: string): Promise<Buffer> => {
    const key = `${gz ? 'gz' : 'raw'}:${f}`;
    let p = uploads.get(key);
    if (!p) {
      p = fsp.readFile(f).then((b) => (gz ? promisify(zlib.gzip)(b, { level: 1 }) : b));
      uploads.set(key, p);
    }
    return p;
  };
  return Promise.all([one(bundle), ...(addon ? [one(addon)] : [])]);
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

interface Connected {
  client: Client;
  host: ResolvedHost;
}

/** Opens an authenticated SSH connection to a resolved host (through its jump hosts or proxy command). */
export async function connectHost(host: ResolvedHost, opts: SshTargetOptions, depth = 0, given?: Readable): Promise<Connected> {
  if (depth > 8) throw new ConnectError(`ProxyJump chain for ${host.alias} is too long (loop?)`);
  let sock: Readable | undefined;
  const jumps: Client[] = [];
  if (host.proxyJump && host.proxyJump !== 'none') {
    // ssh -J a,b,c: connect to a, through it to b, through b to c, then through c to the target.
    const hops = parseProxyJump(host.proxyJump);
    let via: Client | null = null;
    for (const hop of hops) {
      const h = await resolveHost(hop.alias, { configFile: opts.configFile, user: hop.user, port: hop.port });
      h.proxyJump = null;
      if (via) {
        const through: Client = via;
        h.proxyCommand = null;
        const stream = await new Promise<Readable>((resolve, reject) =>
          through.forwardOut('127.0.0.1', 0, h.hostname, h.port, (err, st) => (err ? reject(err) : resolve(st))),
        );
        via = (await connectHost(h, opts, depth + 1, stream)).client;
      } else {
        via = (await connectHost(h, opts, depth + 1)).client;
      }
      jumps.push(via);
    }
    const last: Client = via!;
    sock = await new Promise<Readable>((resolve, reject) =>
      last.forwardOut('127.0.0.1', 0, host.hostname, host.port, (err, stream) => (err ? reject(err) : resolve(stream))),
    );
  } else if (host.proxyCommand && host.proxyCommand !== 'none') {
    sock = duplexFromChild(host.proxyCommand);
  }
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
  const identities: Array<{ file: string; key: Buffer }> = [];
  const encrypted: string[] = [];
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
    identities.push({ file: f, key: data });
  }
  const agentSock = process.env.SSH_AUTH_SOCK && fs.existsSync(process.env.SSH_AUTH_SOCK) ? process.env.SSH_AUTH_SOCK : undefined;
  if (!identities.length && !agentSock) {
    if (encrypted.length) {
      throw new ConnectError(
        `${encrypted[0]} is passphrase-protected and no ssh-agent is running; start one and \`ssh-add ${encrypted[0]}\`, then retry`,
      );
    }
    throw new ConnectError(`no SSH key for ${host.alias}: none of ${host.identityFiles.join(', ') || '~/.ssh/id_*'} exists and no ssh-agent is running`);
  }
  const methods: Array<{ type: 'publickey'; username: string; key: Buffer } | { type: 'agent'; username: string; agent: string }> = [];
  if (agentSock) methods.push({ type: 'agent', username: host.user, agent: agentSock });
  for (const id of identities) methods.push({ type: 'publickey', username: host.user, key: id.key });

  let hostKeyProblem: string | null = null;
  const policy = hostKeyPolicy(host);
  const client = new Client();
  const config: ConnectConfig = {
    host: host.hostname,
    port: host.port,
    username: host.user,
    sock,
    readyTimeout: host.connectTimeoutMs ?? 30_000,
    keepaliveInterval: host.serverAliveIntervalSec > 0 ? host.serverAliveIntervalSec * 1000 : 15_000,
    keepaliveCountMax: host.serverAliveCountMax || 3,
    authHandler: methods as ConnectConfig['authHandler'],
    hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
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
      hostKeyProblem =
        check.status === 'mismatch'
          ? mismatchMessage(args)
          : check.status === 'revoked'
            ? revokedMessage(args)
            : unknownMessage({ ...args, files: policy.files });
      verify(false);
    },
  };
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => {
      trace(`ssh ready: ${host.alias}`);
      resolve();
    });
    const failed = (e: Error & { level?: string; code?: string }): void => {
      for (const j of jumps) j.end();
      if (hostKeyProblem) reject(new ConnectError(hostKeyProblem));
      else if (e.level === 'client-authentication') {
        reject(new ConnectError(`permission denied for ${host.user}@${host.hostname}:${host.port}: tried ${[agentSock ? 'the ssh-agent' : '', ...identities.map((i) => i.file)].filter(Boolean).join(', ')}`));
      } else if (e.level === 'client-timeout') {
        reject(new ConnectError(`connection to ${host.alias} (${host.hostname}:${host.port}) timed out`));
      } else if (e.code === 'ECONNREFUSED') {
        reject(new ConnectError(`cannot connect to ${host.alias} (${host.hostname}:${host.port}): connection refused; is sshd running and the port right?`));
      } else {
        reject(new ConnectError(`cannot connect to ${host.alias} (${host.hostname}:${host.port}): ${e.message}`));
      }
    };
    // The early socket may have failed before ssh2 listened to it.
    if (earlyError) return failed(earlyError);
    client.once('error', failed);
    client.connect(config);
  });
  // The jump hosts live as long as the connection through them.
  client.on('close', () => {
    for (const j of jumps.reverse()) j.end();
  });
  return { client, host };
}

function exec(client: Client, command: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) => client.exec(command, (err, ch) => (err ? reject(err) : resolve(ch))));
}

/** Runs a command to completion, feeding `input`, and returns its stdout, stderr and exit code. */
export async function run(client: Client, command: string, input?: Buffer[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const ch = await exec(client, command);
  let stdout = '';
  let stderr = '';
  ch.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  ch.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const done = new Promise<number | null>((resolve) => ch.on('exit', (code: number | null) => resolve(code)).on('close', () => resolve(null)));
  for (const b of input ?? []) {
    if (!ch.write(b)) await new Promise((r) => ch.once('drain', r));
  }
  ch.end();
  const code = await done;
  return { code, stdout, stderr };
}

type Probe = { kind: 'agent'; channel: ClientChannel; head: Buffer } | { kind: 'probe'; os: string; arch: string; node: string | null; gzip: boolean };

/**
 * Starts the bootstrap exec (or an install, whose `input` it writes first) and waits until it is clear whether the
 * agent answered or the probe did.
 */
async function bootstrap(client: Client, command: string, input: Buffer[] = []): Promise<Probe> {
  const ch = await exec(client, command);
  for (const b of input) ch.write(b);
  let buf = Buffer.alloc(0);
  let stderr = '';
  ch.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 8192) stderr += d.toString('utf8');
  });
  return new Promise<Probe>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (buf.indexOf(MAGIC) >= 0) {
        ch.off('data', onData);
        ch.off('close', onClose);
        ch.pause();
        resolve({ kind: 'agent', channel: ch, head: buf });
        return;
      }
      const text = buf.toString('latin1');
      const at = text.indexOf(PROBE + ' ');
      if (at >= 0 && text.indexOf('\n', at) > 0) {
        const [, osName, arch, node, gz] = text.slice(at, text.indexOf('\n', at)).split(' ');
        ch.off('data', onData);
        ch.close();
        resolve({ kind: 'probe', os: (osName ?? '').toLowerCase(), arch: arch ?? '', node: node && node !== 'none' ? node : null, gzip: gz === 'gz' });
      }
    };
    const onClose = (): void =>
      reject(new ConnectError(`the remote shell exited before skysync could start (${(stderr || buf.toString('utf8')).trim().split('\n').slice(-2).join(' | ') || 'no output'})`));
    ch.on('data', onData);
    ch.on('close', onClose);
  });
}

function nodeArch(unameArch: string): string {
  return unameArch === 'x86_64' || unameArch === 'amd64' ? 'x64' : unameArch === 'aarch64' || unameArch === 'arm64' ? 'arm64' : unameArch;
}

const SIGNAL_NUMBERS: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, KILL: 9, PIPE: 13, TERM: 15 };

/** A signal's death as a shell reports it (128 + n). */
function signalExitCode(signal: string | undefined): number | null {
  if (!signal) return null;
  return 128 + (SIGNAL_NUMBERS[signal.replace(/^SIG/, '')] ?? 0);
}

export class SshTarget implements Target {
  readonly kind = 'ssh' as const;
  readonly key: string;

  constructor(
    readonly spec: string,
    private readonly opts: SshTargetOptions = {},
  ) {
    this.key = `ssh:${spec}`;
  }

  /** How `ssh` (and so rsync) reaches this target: the config file to pass with -F, if any. */
  get configFile(): string | undefined {
    return this.opts.configFile;
  }

  resolve(): Promise<ResolvedHost> {
    return resolveHost(this.spec, { configFile: this.opts.configFile });
  }

  private connected: Promise<Connected> | null = null;
  private retained = false;
  private channels = 0;
  /** A direct connection was made (and may be handed to a background process for the next command). */
  private connectedDirectly = false;
  private warmSocket: string | null | undefined;

  /** The warm connection's socket, when warm connections are on and one may exist. */
  private controlSocket(): string | null {
    if (this.warmSocket === undefined) {
      this.warmSocket =
        this.opts.control === false || persistSeconds() === 0 ? null : controlSocketPath(this.spec, this.opts.configFile, `${CONTROL_VERSION}:${agentBundle().hash}`);
    }
    return this.warmSocket;
  }

  /** Ends the warm connection to this target, if there is one. */
  async disconnect(): Promise<boolean> {
    return controlShutdown(controlSocketPath(this.spec, this.opts.configFile, `${CONTROL_VERSION}:${agentBundle().hash}`));
  }

  /** Opens the connection now (for the background process). */
  async warm(): Promise<void> {
    await this.connection();
  }

  onDisconnect(cb: () => void): void {
    void this.connected?.then(({ client }) => client.once('close', cb), cb);
  }

  /** The SSH connection, opened on first use and shared by the agent and every command of this target. */
  private connection(): Promise<Connected> {
    if (!this.connected) {
      const c = (async () => connectHost(await this.resolve(), this.opts))();
      this.connected = c;
      c.then(
        ({ client }) => (this.connectedDirectly = true) && client.once('close', () => {
          if (this.connected === c) this.connected = null;
        }),
        () => {
          if (this.connected === c) this.connected = null;
        },
      );
    }
    return this.connected;
  }

  retain(): void {
    this.retained = true;
  }

  async close(): Promise<void> {
    this.retained = false;
    if (this.channels === 0) await this.endConnection();
    // Leave a warm connection behind for the next command (as ControlPersist does).
    const sock = this.controlSocket();
    if (sock && this.connectedDirectly) {
      this.connectedDirectly = false;
      try {
        ensureControlDir();
        if (process.env.SKYSYNC_DEBUG) process.stderr.write(`skysync: ${this.spec}: leaving a warm connection\n`);
        spawnControlDaemon({
          spec: this.spec,
          socket: sock,
          idleSeconds: persistSeconds(),
          options: { configFile: this.opts.configFile, installNode: this.opts.installNode, nodeUrl: this.opts.nodeUrl },
        });
      } catch {
        // Only a missed speed-up.
      }
    }
  }

  private async endConnection(): Promise<void> {
    const c = this.connected;
    this.connected = null;
    if (!c) return;
    try {
      const { client } = await c;
      await new Promise<void>((resolve) => {
        client.once('close', () => resolve());
        client.end();
        setTimeout(resolve, 2000).unref();
      });
    } catch {
      // It never opened: nothing to end.
    }
  }

  /** Counts a channel in; its end may close the connection when nothing else holds it. */
  private track(ch: ClientChannel): () => void {
    this.channels++;
    let counted = true;
    const untrack = (): void => {
      if (!counted) return;
      counted = false;
      this.channels--;
      if (this.channels === 0 && !this.retained) void this.endConnection();
    };
    ch.once('close', untrack);
    return untrack;
  }

  async exec(command: string): Promise<RemoteProcess> {
    const sock = this.controlSocket();
    if (sock && !this.connected) {
      try {
        return await controlExec(sock, command, this.opts.log);
      } catch (e) {
        if (!(e instanceof ControlGone)) throw e;
        if (process.env.SKYSYNC_DEBUG) process.stderr.write(`skysync: ${this.spec}: no warm connection for exec: ${(e as Error).message}\n`);
      }
    }
    const { client } = await this.connection();
    const ch = await exec(client, command);
    this.track(ch);
    const exited = new Promise<number | null>((resolve) => {
      let code: number | null = null;
      ch.on('exit', (c: number | null, signal?: string) => (code = c ?? signalExitCode(signal)));
      ch.on('close', () => resolve(code));
    });
    return { stdout: ch, stderr: ch.stderr, stdin: ch, exited };
  }

  async openSocket(socketPath: string): Promise<RemoteSocket> {
    const sock = this.controlSocket();
    // An agent reached through the warm connection is on that connection's host: no second handshake for this.
    if (sock && !this.connected) return controlSocketStream(sock, socketPath);
    const { client } = await this.connection();
    const ch = await new Promise<ClientChannel>((resolve, reject) =>
      client.openssh_forwardOutStreamLocal(socketPath, (err, channel) => (err ? reject(err) : resolve(channel))),
    );
    this.track(ch);
    return {
      input: ch,
      output: ch,
      close: () => {
        ch.end();
        ch.close();
      },
    };
  }

  async openAgent(prelude?: Buffer): Promise<AgentChannel> {
    const sock = this.controlSocket();
    if (sock && !this.connected) {
      try {
        const ch = await controlAgent(sock, this.opts.log);
        if (prelude) ch.output.write(prelude);
        return ch;
      } catch (e) {
        if (!(e instanceof ControlGone)) throw e;
        if (process.env.SKYSYNC_DEBUG) process.stderr.write(`skysync: ${this.spec}: no warm connection for the agent: ${(e as Error).message}\n`);
      }
    }
    try {
      return await this.startAgent(prelude);
    } catch (e) {
      if (this.channels === 0 && !this.retained) await this.endConnection();
      throw e;
    }
  }

  private async startAgent(prelude?: Buffer): Promise<AgentChannel> {
    // The shell and the probe never read stdin: the prelude waits in the pipe for the agent (or is dropped with a
    // probe's channel, and sent again after the install).
    const first = prelude ? [prelude] : [];
    const { client, host } = await this.connection();
    const { file, hash } = agentBundle();
    let probe = await bootstrap(client, bootstrapCommand(hash), first);
    trace(`bootstrap on ${host.alias}: ${probe.kind}`);
    if (probe.kind === 'probe') {
      let major = probe.node ? Number(/^v(\d+)/.exec(probe.node)?.[1] ?? 0) : 0;
      if (major < MIN_NODE_MAJOR && this.opts.installNode !== false) {
        const done = await provisionNode(client, probe, this.opts);
        if (done) {
          this.opts.log?.(`${host.alias} had ${probe.node ? `node ${probe.node}` : 'no node'}: ${done} into ~/.skysync/node`);
          major = MIN_NODE_MAJOR;
        }
      }
      if (major < MIN_NODE_MAJOR) {
        await this.endConnection();
        throw new NoAgentError(
          `${host.alias} has ${probe.node ? `node ${probe.node}, older than ${MIN_NODE_MAJOR}` : 'no node'}; the skysync agent needs node >= ${MIN_NODE_MAJOR}`,
        );
      }
      // Upload the agent (and the addon when the remote platform matches one built here), then start it, in one exec.
      const addon = nativeAddonPath();
      const same = !!addon && probe.os === os.platform() && nodeArch(probe.arch) === os.arch();
      const files = await uploadFiles(file, same ? addon : null, probe.gzip);
      const cmd = `sh -c ${shellQuote(installCommand(hash, same, probe.gzip))} skysync-install ${files.map((f) => f.length).join(' ')}`;
      trace(`installing on ${host.alias}`);
      try {
        probe = await bootstrap(client, cmd, [...files, ...first]);
      } catch (e) {
        await this.endConnection();
        throw new ConnectError(`could not install the skysync agent on ${host.alias}: ${(e as Error).message}`);
      }
      if (probe.kind !== 'agent') {
        await this.endConnection();
        throw new ConnectError(`the skysync agent did not start on ${host.alias} after installing it`);
      }
      this.opts.log?.(`installed the skysync agent on ${host.alias}${same ? ' (with the native addon)' : ' (TypeScript fallback)'}`);
    }
    const ch = probe.channel;
    const untrack = this.track(ch);
    const input = new PassThrough();
    input.write(probe.head);
    ch.pipe(input);
    ch.resume();
    let stderr = '';
    ch.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 64 * 1024) stderr += d.toString('utf8');
    });
    const exited = new Promise<number | null>((resolve) => {
      let code: number | null = null;
      ch.on('exit', (c: number | null) => (code = c));
      ch.on('close', () => resolve(code));
    });
    return {
      input,
      output: ch,
      stderr: () => stderr,
      exited,
      close: async () => {
        ch.end();
        const t = setTimeout(() => ch.close(), 10_000);
        await exited;
        clearTimeout(t);
      },
      detach: () => {
        ch.end();
        untrack();
      },
    };
  }
}

