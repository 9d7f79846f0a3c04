// Node for a remote that has none (or one too old): downloaded there into ~/.skysync/node, or this machine's own
// binary uploaded when the download fails and the platforms match.

import fs from 'node:fs';
import os from 'node:os';
import type { Client } from 'ssh2';
import { run } from './connect.js';
import { shellQuote } from './shell.js';

/** The official distribution, for the Node version this client runs on. */
export const DEFAULT_NODE_URL = 'https://nodejs.org/dist/{version}/node-{version}-{os}-{arch}.tar.gz';

/** Node's name for a machine `uname -m` names. */
export function nodeArch(unameArch: string): string {
  return unameArch === 'x86_64' || unameArch === 'amd64' ? 'x64' : unameArch === 'aarch64' || unameArch === 'arm64' ? 'arm64' : unameArch;
}

/**
 * Provisions Node into ~/.skysync/node on the remote: downloaded there (curl or wget, then tar) into a temp
 * directory renamed into place; or, when that fails and the platforms match, this machine's own binary uploaded
 * over the same connection. Returns what was done, for one line of output.
 */
export async function provisionNode(client: Client, probe: { os: string; arch: string }, nodeUrl: string | undefined): Promise<string | null> {
  const url = (nodeUrl ?? process.env.SKYSYNC_NODE_URL ?? DEFAULT_NODE_URL)
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
    if (u.code === 0)
      return `uploaded this machine's Node ${process.version} (download from ${url} failed: ${(r.stderr.trim().split('\n').pop() ?? '').slice(0, 120) || `exit ${r.code}`})`;
  }
  return null;
}
