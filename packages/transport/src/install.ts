// Installing the agent where the bootstrap found none: Node first if the remote lacks a usable one, then the
// bundle (and the addon when the platform matches) uploaded and started in one exec.

import os from 'node:os';
import type { Client } from 'ssh2';
import { trace } from '@skysync/protocol';
import { agentBundle, uploadFiles } from './agent-bundle.js';
import { nativeAddonPath } from './local.js';
import { bootstrap, startScript, type Probe } from './probe.js';
import { nodeArch, provisionNode } from './provision-node.js';
import { shellQuote } from './shell.js';
import { ConnectError, NoAgentError } from './target.js';

const MIN_NODE_MAJOR = 18;

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

export interface InstallContext {
  client: Client;
  /** The host's name, for messages. */
  alias: string;
  /** The client's first frames, written after the upload so the agent finds them waiting. */
  prelude: Buffer[];
  installNode?: boolean;
  nodeUrl?: string;
  log?: (msg: string) => void;
  /** Ends the connection when the install cannot go on (the caller's, so it knows what it holds). */
  giveUp(): Promise<void>;
}

/** After a probe: makes sure of node, uploads the agent and starts it, in as few execs as that takes. */
export async function installAgent(probe: Extract<Probe, { kind: 'probe' }>, c: InstallContext): Promise<Extract<Probe, { kind: 'agent' }>> {
  let major = probe.node ? Number(/^v(\d+)/.exec(probe.node)?.[1] ?? 0) : 0;
  if (major < MIN_NODE_MAJOR && c.installNode !== false) {
    const done = await provisionNode(c.client, probe, c.nodeUrl);
    if (done) {
      c.log?.(`${c.alias} had ${probe.node ? `node ${probe.node}` : 'no node'}: ${done} into ~/.skysync/node`);
      major = MIN_NODE_MAJOR;
    }
  }
  if (major < MIN_NODE_MAJOR) {
    await c.giveUp();
    throw new NoAgentError(`${c.alias} has ${probe.node ? `node ${probe.node}, older than ${MIN_NODE_MAJOR}` : 'no node'}; the skysync agent needs node >= ${MIN_NODE_MAJOR}`);
  }
  // Upload the agent (and the addon when the remote platform matches one built here), then start it, in one exec.
  const { file, hash } = agentBundle();
  const addon = nativeAddonPath();
  const same = !!addon && probe.os === os.platform() && nodeArch(probe.arch) === os.arch();
  const files = await uploadFiles(file, same ? addon : null, probe.gzip);
  const cmd = `sh -c ${shellQuote(installCommand(hash, same, probe.gzip))} skysync-install ${files.map((f) => f.length).join(' ')}`;
  trace(`installing on ${c.alias}`);
  let started: Probe;
  try {
    started = await bootstrap(c.client, cmd, [...files, ...c.prelude]);
  } catch (e) {
    await c.giveUp();
    throw new ConnectError(`could not install the skysync agent on ${c.alias}: ${(e as Error).message}`);
  }
  if (started.kind !== 'agent') {
    await c.giveUp();
    throw new ConnectError(`the skysync agent did not start on ${c.alias} after installing it`);
  }
  c.log?.(`installed the skysync agent on ${c.alias}${same ? ' (with the native addon)' : ' (TypeScript fallback)'}`);
  return started;
}
