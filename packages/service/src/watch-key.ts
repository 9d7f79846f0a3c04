// Where a watch service listens: one key for the client's source watch and the agent's destination watch, so a
// caller only ever finds a service of its own build, for its own root and user.

import { createHash } from 'node:crypto';
import fs from 'node:fs';

/** In every key: a caller never talks to a service whose protocol differs. */
export const WATCH_SERVICE_VERSION = 1;

/** The file's real path: one process may reach it through a workspace's symlink and another directly. */
function real(f: string | null): string | null {
  try {
    return f ? fs.realpathSync(f) : null;
  } catch {
    return f;
  }
}

function stamp(f: string | null): number | null {
  try {
    return f ? fs.statSync(f).mtimeMs : null;
  } catch {
    // Then starting or loading it fails too, and the caller checks everything.
    return null;
  }
}

/**
 * A short name for the service watching `root`, keyed by the root, the files the service runs from (its code and
 * the addon holding the watcher; null for one that is absent), their modification times, and the user.
 */
export function watchServiceKey(root: string, build: ReadonlyArray<string | null>): string {
  const files = build.map((f) => {
    const r = real(f);
    return [r, stamp(r)];
  });
  const key = JSON.stringify({ root, version: WATCH_SERVICE_VERSION, build: files, uid: process.getuid?.() });
  return createHash('sha256').update(key).digest('hex').slice(0, 24);
}
