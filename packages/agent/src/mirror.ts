// `--delete`: after a push, remove what the destination holds beyond the source, except what the synced ignore
// rules exclude (those are the user's to keep: build outputs, data, caches), whoever placed it: a job, or another
// source that pushed here (the tree store tells the source's paths from theirs, `sources.ts`). Removals go
// through the root guard, by directory handle: a directory swapped for a symlink meanwhile never leads a removal
// outside.

import { RootGuard } from '@skysync/apply';
import type { NativeAddon } from '@skysync/chunking';
import type { FileFailure } from '@skysync/protocol';

/** Whether `p` is one of `roots` or lies below one. */
export function underAny(p: string, roots: Set<string>): boolean {
  if (!roots.size) return false;
  for (let at = p.length; at > 0; at = p.lastIndexOf('/', at - 1)) if (roots.has(p.slice(0, at))) return true;
  return false;
}

/**
 * Returns the paths it removed. `unreadable`: what the source has but could not read (a file it could not open,
 * a directory it could not list): what stands there, and below it, is left alone.
 */
export async function mirrorExtras(root: string, source: { ofSource(path: string): boolean }, native: NativeAddon, failed: FileFailure[], unreadable: string[]): Promise<string[]> {
  const scan = await native.scan(root, null);
  const keep = new Set(unreadable);
  const extras = scan.changes
    .map((c) => c.entry)
    .filter((e) => !source.ofSource(e.path) && !e.path.split('/')[0]!.startsWith('.skysync-') && !underAny(e.path, keep))
    .sort((a, b) => (a.path < b.path ? 1 : -1));
  const guard = new RootGuard(root);
  const removed: string[] = [];
  try {
    for (const e of extras) {
      try {
        if (e.kind === 'dir') guard.rmdir(e.path);
        else guard.unlink(e.path);
        removed.push(e.path);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // A directory that still holds ignored files stays.
        if (code !== 'ENOTEMPTY' && code !== 'ENOENT') failed.push({ path: e.path, error: (err as Error).message });
      }
    }
  } finally {
    guard.close();
  }
  return removed;
}
