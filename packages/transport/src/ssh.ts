// SSH targets: reach the host the way the user's OpenSSH would (connect.ts), then start the agent with one exec
// (probe.ts). When the agent is missing, the same exec reports the platform instead, the bundle is uploaded over
// the same connection and started (install.ts). A warm connection (control.ts) serves later commands.

import { PassThrough } from 'node:stream';
import type { ClientChannel } from 'ssh2';
import { trace } from '@skysync/protocol';
import { agentBundle } from './agent-bundle.js';
import { connectHost, exec, failWritesOnClose, type Connected } from './connect.js';
import {
  ControlGone,
  controlAgent,
  controlExec,
  controlSocketStream,
  controlShutdownAll,
  controlSocketPath,
  ensureControlDir,
  persistSeconds,
  spawnControlDaemon,
} from './control.js';
import { withIdleDeadline } from './idle-deadline.js';
import { installAgent } from './install.js';
import { agentSubcommand, bootstrap, bootstrapCommand } from './probe.js';
import { resolveHost, type ResolvedHost } from './ssh-config/index.js';
import type { AgentChannel, RemoteProcess, RemoteSocket, Target } from './target.js';

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
  /** Give up on an agent channel silent for SKYSYNC_AGENT_IDLE_TIMEOUT (default true; not for kept agents). */
  idleDeadline?: boolean;
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
    // Every one: a warm connection made before the config (or skysync) changed has a socket of its own.
    return controlShutdownAll(this.spec);
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
        ({ client }) =>
          (this.connectedDirectly = true) &&
          client.once('close', () => {
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

  agentCommand(args: string[]): string {
    return agentSubcommand(agentBundle().hash, args);
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
    const ch = await new Promise<ClientChannel>((resolve, reject) => client.openssh_forwardOutStreamLocal(socketPath, (err, channel) => (err ? reject(err) : resolve(channel))));
    this.track(ch);
    failWritesOnClose(ch, `the channel to ${socketPath}`);
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
        const ch = withIdleDeadline(await controlAgent(sock, this.opts.log), `the agent on ${this.spec}`);
        if (prelude) ch.output.write(prelude);
        return ch;
      } catch (e) {
        if (!(e instanceof ControlGone)) throw e;
        if (process.env.SKYSYNC_DEBUG) process.stderr.write(`skysync: ${this.spec}: no warm connection for the agent: ${(e as Error).message}\n`);
      }
    }
    try {
      const ch = await this.startAgent(prelude);
      // The background process keeps agents idle on purpose; a command's own channel must not stay silent.
      return this.opts.idleDeadline === false ? ch : withIdleDeadline(ch, `the agent on ${this.spec}`);
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
    let probe = await bootstrap(client, bootstrapCommand(agentBundle().hash), first);
    trace(`bootstrap on ${host.alias}: ${probe.kind}`);
    if (probe.kind === 'probe') {
      probe = await installAgent(probe, {
        client,
        alias: host.alias,
        prelude: first,
        installNode: this.opts.installNode,
        nodeUrl: this.opts.nodeUrl,
        log: this.opts.log,
        giveUp: () => this.endConnection(),
      });
    }
    const ch = probe.channel;
    failWritesOnClose(ch, `the agent's channel to ${host.alias}`);
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
