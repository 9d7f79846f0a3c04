// The client's own state (per-target trees, warm connections' sockets): one root for every package on this side.

import os from 'node:os';
import path from 'node:path';

/** $SKYSYNC_STATE_DIR, else skysync's directory in the user's cache ($XDG_CACHE_HOME or ~/.cache). */
export function stateRoot(): string {
  return process.env.SKYSYNC_STATE_DIR || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'skysync');
}
