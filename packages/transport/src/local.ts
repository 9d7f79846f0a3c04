// The embedded target: `local:DIR` makes DIR play the remote's home, and the agent runs as a child process
// from the same bundle that would be installed on a remote.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
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
    const dir = path.dirname(require.resolve('@skysync/native/package.json'));
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

export class LocalTarget implements Target {
  readonly kind = 'local' as const;
  readonly key: string;

  constructor(
    readonly spec: string,
    readonly home: string,
  ) {
    this.key = `local:${home}`;
  }

  async openAgent(): Promise<AgentChannel> {
    fs.mkdirSync(this.home, { recursive: true });
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: this.home, RAYON_NUM_THREADS: process.env.RAYON_NUM_THREADS ?? '1' };
    const addon = process.env.SKYSYNC_NO_NATIVE ? null : nativeAddonPath();
    if (addon && !env.SKYSYNC_NATIVE_PATH) env.SKYSYNC_NATIVE_PATH = addon;
    // For profiling the agent: SKYSYNC_AGENT_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof".
    const nodeArgs = (process.env.SKYSYNC_AGENT_NODE_ARGS ?? '').split(' ').filter(Boolean);
    return spawnAgent(process.execPath, [...nodeArgs, agentBundlePath(), 'serve', '--home', this.home], env);
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

  async close(): Promise<void> {}
}

