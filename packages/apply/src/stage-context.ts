// What the stagers share with the receiver that drives them.

import fs from 'node:fs';
import type { FileEntry } from '@skysync/protocol';
import type { DataStream } from './data-stream.js';
import type { RootGuard } from './root-guard.js';
import type { ReceiverOptions, SessionChunk, StatKey } from './types.js';

export interface StageContext {
  readonly opts: ReceiverOptions;
  readonly guard: RootGuard;
  readonly stream: DataStream;
  readonly session: Map<string, SessionChunk>;
  /** Records where a chunk of this sync was written (and tells `onChunk`). */
  remember(key: string, sc: SessionChunk): void;
  /** A new temp name for the file at `rel`: in its directory, or in the staging directory when that is not one
   * (yet). */
  tempFor(rel: string): string;
  readonly bytes: { fromStream: number; fromDisk: number };
  /** Set once the sync gave up: nothing more is written. */
  readonly aborted: boolean;
}

/** Sets the entry's mode and mtime on a finished file and says what fstat sees. */
export function finishTemp(fd: number, e: FileEntry): StatKey {
  fs.fchmodSync(fd, e.mode);
  const t = e.mtimeSec + e.mtimeNsec / 1e9;
  fs.futimesSync(fd, t, t);
  const st = fs.fstatSync(fd, { bigint: true });
  // The last guard before the rename: a file shorter or longer than its entry would land torn.
  if (st.size !== BigInt(e.size)) throw new Error(`wrote ${st.size} of ${e.size} bytes`);
  return { size: Number(st.size), mtimeNs: st.mtimeNs.toString(), ino: st.ino.toString() };
}
