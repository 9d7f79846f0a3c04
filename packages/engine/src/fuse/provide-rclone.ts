// rclone on a node, provided the way the agent and Node are: the node's own when it has one, else this machine's
// binary uploaded when the platforms match, else downloaded there from rclone's site.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Target } from '@skysync/transport';
import { capture } from '../cluster/capture.js';
import { shellQuote } from '../run.js';

/** The release downloaded onto nodes that have none and cannot take ours (SkyPilot's MOUNT_CACHED uses it). */
const RCLONE_VERSION = 'v1.68.2';

const PROBE = 'if [ -x "$HOME/.skysync/bin/rclone" ] || command -v rclone >/dev/null 2>&1; then echo have; else echo "need $(uname -s) $(uname -m)"; fi';

/** This machine's rclone: SKYSYNC_RCLONE, else the first on PATH. */
function localRclone(): string | null {
  if (process.env.SKYSYNC_RCLONE) return process.env.SKYSYNC_RCLONE;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const p = path.join(dir || '.', 'rclone');
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

function rcloneArch(uname: string): string | null {
  return uname === 'x86_64' || uname === 'amd64' ? 'amd64' : uname === 'aarch64' || uname === 'arm64' ? 'arm64' : null;
}

const INSTALL = ['set -e', 'd="$HOME/.skysync/bin"; mkdir -p "$d"; t="$d/.rclone.$$.tmp"', 'cat > "$t"; chmod 755 "$t"', '"$t" version >/dev/null', 'mv "$t" "$d/rclone"'].join(
  '; ',
);

const DOWNLOAD = [
  'set -e',
  'd="$HOME/.skysync/bin"; mkdir -p "$d"; t="$d/.rclone-dl.$$"; rm -rf "$t"; mkdir -p "$t"',
  'if command -v curl >/dev/null 2>&1; then curl -fsSL --connect-timeout 10 --max-time 300 -o "$t/r.zip" "$1"; else wget -q -T 10 -O "$t/r.zip" "$1"; fi',
  'if command -v unzip >/dev/null 2>&1; then unzip -q -o "$t/r.zip" -d "$t"; else python3 -m zipfile -e "$t/r.zip" "$t"; fi',
  'f=$(find "$t" -type f -name rclone | head -n 1); chmod 755 "$f"; "$f" version >/dev/null',
  'mv "$f" "$d/rclone"; rm -rf "$t"',
].join('; ');

/** Makes sure the node can run rclone; resolves with why it cannot, or null. */
export async function provideRclone(target: Target): Promise<string | null> {
  const probe = await capture(target, `sh -c ${shellQuote(PROBE)}`);
  const answer = probe.out.trim().split('\n').pop() ?? '';
  if (answer === 'have') return null;
  const [, system, machine] = answer.split(' ');
  const ours = localRclone();
  if (ours && system?.toLowerCase() === os.platform() && rcloneArch(machine ?? '') === rcloneArch(os.arch() === 'x64' ? 'x86_64' : os.arch())) {
    const proc = await target.exec(`sh -c ${shellQuote(INSTALL)}`);
    fs.createReadStream(ours).pipe(proc.stdin);
    proc.stdout.resume();
    proc.stderr.resume();
    if ((await proc.exited) === 0) return null;
  }
  const arch = rcloneArch(machine ?? '');
  if (system === 'Linux' && arch) {
    const url = `https://downloads.rclone.org/${RCLONE_VERSION}/rclone-${RCLONE_VERSION}-linux-${arch}.zip`;
    const r = await capture(target, `sh -c ${shellQuote(DOWNLOAD)} skysync-rclone ${shellQuote(url)}`);
    if (r.code === 0) return null;
    return `rclone is not on ${target.spec} and could not be downloaded there (${r.err.trim().split('\n').pop() || `exit ${r.code}`}); install rclone on the node, or set SKYSYNC_RCLONE to a ${system} ${machine} rclone binary here`;
  }
  return `rclone is not on ${target.spec} (${answer || 'no answer'}) and skysync has no rclone for that platform; install rclone on the node`;
}
