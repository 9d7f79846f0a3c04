// A task's local file_mounts on a node: written where they go when this user may, else under ~/.sky/file_mounts
// and linked into place (with sudo when it takes no password), as SkyPilot does.

import type { FileMount } from '@skysync/task';
import type { Target } from '@skysync/transport';
import { shellQuote } from '../run.js';
import { capture } from './capture.js';

export type LocalMount = Extract<FileMount, { kind: 'local' }>;

export type Placement = 'direct' | 'link';

/** What placing a mount needs to know of it (a local mount or a bucket mount). */
type Placed = Pick<FileMount, 'key' | 'remote'>;

const PROBE_MOUNTS = [
  // For each destination: can this user write it (or create it), or must it be linked into place?
  'for D in "$@"; do',
  '  p="$D"; while [ ! -e "$p" ] && [ ! -L "$p" ] && [ "$p" != / ]; do p=$(dirname "$p"); done',
  '  if [ -L "$D" ]; then echo link; elif [ -w "$p" ]; then echo direct; else echo link; fi',
  'done',
].join('\n');

/** Where each elsewhere-mount goes on one node: written directly, or under ~/.sky/file_mounts and linked. */
export async function mountPlacements(target: Target, mounts: Placed[]): Promise<Map<string, Placement>> {
  const result = new Map<string, Placement>();
  // Loaded only for tasks: the YAML parser costs every other command startup time.
  const { placement } = await import('@skysync/task');
  const elsewhere = mounts.filter((m) => placement(m.remote) === 'elsewhere');
  for (const m of mounts) if (!elsewhere.includes(m)) result.set(m.key, 'direct');
  if (!elsewhere.length) return result;
  const r = await capture(target, `sh -c ${shellQuote(PROBE_MOUNTS)} skysync-mounts ${elsewhere.map((m) => shellQuote(m.remote)).join(' ')}`);
  const answers = r.out.trim().split('\n');
  elsewhere.forEach((m, i) => result.set(m.key, answers[i] === 'direct' ? 'direct' : 'link'));
  return result;
}

/** Where a mount's bytes go: its destination, or the place a link there will point to. */
export function placedAt(remote: string, where: Placement | undefined): string {
  return where === 'link' ? `~/.sky/file_mounts/${remote.replace(/^\/+/, '')}` : remote;
}

const LINK_MOUNT = [
  's="$HOME/.sky/file_mounts/${1#/}"; d="$1"',
  'if [ -L "$d" ] && [ "$(readlink "$d")" = "$s" ]; then exit 0; fi',
  'if [ -e "$d" ] && [ ! -L "$d" ]; then echo "Failed mounting because path exists: $d" >&2; exit 3; fi',
  'if [ -w "$(dirname "$d")" ] 2>/dev/null; then ln -sfn "$s" "$d" && exit 0; fi',
  'command -v sudo >/dev/null 2>&1 || { echo "cannot write $(dirname "$d") and there is no sudo" >&2; exit 4; }',
  'sudo -n mkdir -p "$(dirname "$d")" && sudo -n ln -sfn "$s" "$d" || { echo "cannot write $(dirname "$d") and sudo needs a password" >&2; exit 4; }',
].join('\n');

/** Links a mount placed under ~/.sky/file_mounts into its destination; resolves with why it could not, or null. */
export async function linkMount(target: Target, mount: Placed): Promise<string | null> {
  const r = await capture(target, `sh -c ${shellQuote(LINK_MOUNT)} skysync-link ${shellQuote(mount.remote)}`);
  if (r.code === 0) return null;
  const why = r.err.trim().split('\n').pop() || `exit ${r.code}`;
  return `${mount.key}: ${why} on ${target.spec}; pick a destination under ~/ or /tmp/, or one this user may write`;
}
