// The embedded target: `local:DIR` makes DIR play the remote's home, and the agent runs as a child process
// from the same bundle that would be installed on a remote. As for SSH targets, the first command leaves a warm
// agent behind (control.ts): a background process that keeps the agent running for the next command, which then
// skips starting node, and whose drift check sees only what a watch saw change.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { ControlGone, controlAgent, controlShutdownAll, controlSocketPath, ensureControlDir, persistSeconds, spawnControlDaemon } from './control.js';
import { withIdleDeadline } from './idle-deadline.js';
import { shellQuote } from './shell.js';
import { TargetError, type AgentChannel, type RemoteProcess, type Target } from './target.js';

const require = createRequire(import.meta.url);

/** The bundled agent (one CommonJS file) that this installation ships. */
export function agentBundlePath(): string {
  const fromEnv = process.env.SKYSYNC_AGENT_BUNDLE;
  if (fromEnv) return fromEnv;
  const pkg = path.dirname(require.resolve('@skysync/agent/package.json'));
  const bundle = path.join(pkg, 'dist', 'agent.cjs');
  if (!fs.existsSync(bundle)) throw new TargetError(`agent bundle missing at ${bundle}; run \`pnpm build\``);
  return bundle;
}

/** The native addon built for this machine, if any (handed to local agents). */
export function nativeAddonPath(): string | null {
  try {
    // Real, not through a workspace's symlink: warm agents and watch services are keyed by this path.
    const dir = fs.realpathSync(path.dirname(require.resolve('@skysync/native/package.json')));
    for (const name of fs.readdirSync(dir)) {
      if (name.startsWith('skysync.') && name.endsWith('.node')) return path.join(dir, name);
    }
  } catch {
    // No addon package: agents use the TypeScript fallback.
  }
  return null;
}

export function spawnAgent(command: string, args: string[], env: NodeJS.ProcessEnv): AgentChannel {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    if (stderr.length < 64 * 1024) stderr += d;
  });
  const exited = new Promise<number | null>((resolve) => {
    child.on('close', (code) => resolve(code));
    child.on('error', (e) => {
      stderr += `\n${e.message}`;
      resolve(null);
    });
  });
  return {
    input: child.stdout,
    output: child.stdin,
    stderr: () => stderr,
    exited,
    close: async () => {
      child.stdin.end();
      const t = setTimeout(() => child.kill('SIGTERM'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Bumped when what a local warm agent is keyed by changes. */
const LOCAL_CONTROL_VERSION = 2;

/**
 * What a local agent's behaviour depends on besides its home: the bundle and addon it runs, and the skysync
 * settings in its environment. A command with other settings gets its own warm agent.
 */
function localAgentKey(): string {
  const bundle = agentBundlePath();
  let stamp = '';
  for (const f of [bundle, nativeAddonPath()]) {
    if (!f) continue;
    try {
      const st = fs.statSync(f);
      stamp += `${f}:${st.size}:${st.mtimeMs};`;
    } catch {
      stamp += `${f}:missing;`;
    }
  }
  const settings = Object.entries(process.env)
    .filter(([k]) => (k.startsWith('SKYSYNC_') && k !== 'SKYSYNC_CONTROL_PERSIST' && k !== 'SKYSYNC_DEBUG') || k === 'RAYON_NUM_THREADS')
    .sort(([a], [b]) => (a < b ? -1 : 1));
  return createHash('sha256').update(JSON.stringify({ stamp, settings })).digest('hex').slice(0, 16);
}

export interface LocalTargetOptions {
  /** Use and leave behind a warm agent (default: unless SKYSYNC_CONTROL_PERSIST=0). */
  control?: boolean;
  /** Give up on an agent channel silent for SKYSYNC_AGENT_IDLE_TIMEOUT (default true; not for kept agents). */
  idleDeadline?: boolean;
}

export class LocalTarget implements Target {
  readonly kind = 'local' as const;
  readonly key: string;
  /** An agent was started here, not reached through a warm one: leave one behind at the end. */
  private spawned = false;
  private warmSocket: string | null | undefined;

  constructor(
    readonly spec: string,
    readonly home: string,
    private readonly opts: LocalTargetOptions = {},
  ) {
    this.key = `local:${home}`;
  }

  private controlSocket(): string | null {
    if (this.warmSocket === undefined) {
      this.warmSocket = this.opts.control === false || persistSeconds() === 0 ? null : controlSocketPath(this.key, undefined, `local${LOCAL_CONTROL_VERSION}:${localAgentKey()}`);
    }
    return this.warmSocket;
  }

  async openAgent(prelude?: Buffer): Promise<AgentChannel> {
    const started = await this.startAgent();
    // The background process keeps agents idle on purpose; a command's own channel must not stay silent.
    const ch = this.opts.idleDeadline === false ? started : withIdleDeadline(started, 'the agent');
    if (prelude) ch.output.write(prelude);
    return ch;
  }

  private async startAgent(): Promise<AgentChannel> {
    const sock = this.controlSocket();
    if (sock) {
      try {
        return await controlAgent(sock);
      } catch (e) {
        if (!(e instanceof ControlGone)) throw e;
      }
    }
    this.spawned = true;
    return this.spawnAgent();
  }

  private spawnAgent(): AgentChannel {
    fs.mkdirSync(this.home, { recursive: true });
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: this.home, RAYON_NUM_THREADS: process.env.RAYON_NUM_THREADS ?? '1' };
    const addon = process.env.SKYSYNC_NO_NATIVE ? null : nativeAddonPath();
    if (addon && !env.SKYSYNC_NATIVE_PATH) env.SKYSYNC_NATIVE_PATH = addon;
    // For profiling the agent: SKYSYNC_AGENT_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof".
    const nodeArgs = (process.env.SKYSYNC_AGENT_NODE_ARGS ?? '').split(' ').filter(Boolean);
    return spawnAgent(process.execPath, [...nodeArgs, agentBundlePath(), 'serve', '--home', this.home], env);
  }

  /** Ends the warm agent of this target, if there is one. */
  async disconnect(): Promise<boolean> {
    return controlShutdownAll(this.key);
  }

  /** For the background process: nothing to connect. */
  async warm(): Promise<void> {}

  /** A local target never disconnects by itself. */
  onDisconnect(_cb: () => void): void {}

  agentCommand(args: string[]): string {
    return `exec ${[process.execPath, agentBundlePath(), ...args, '--home', this.home].map(shellQuote).join(' ')}`;
  }

  async exec(command: string): Promise<RemoteProcess> {
    fs.mkdirSync(this.home, { recursive: true });
    // Its own session, as sshd gives each command: signals for the job reach its group and not this process.
    const child = spawn('sh', ['-c', command], { cwd: this.home, env: { ...process.env, HOME: this.home }, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    const exited = new Promise<number | null>((resolve) => {
      child.on('close', (code, signal) => resolve(code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : null)));
      child.on('error', () => resolve(null));
    });
    return { stdout: child.stdout, stderr: child.stderr, stdin: child.stdin, exited };
  }

  retain(): void {}

  async close(): Promise<void> {
    const sock = this.controlSocket();
    if (!sock || !this.spawned) return;
    this.spawned = false;
    try {
      ensureControlDir();
      spawnControlDaemon({ spec: this.spec, socket: sock, idleSeconds: persistSeconds(), options: {}, local: { home: this.home } });
    } catch {
      // Only a missed speed-up.
    }
  }
}
