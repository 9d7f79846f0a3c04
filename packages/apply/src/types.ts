// What the receiver's pieces share: the records it hands back, the options it takes, and a file on its way
// from the plan to its place.

import type { Chunker, NativeAddon } from '@skysync/chunking';
import type { DeleteMode, FileFailure, PlanEntry } from '@skysync/protocol';

export interface StatKey {
  size: number;
  mtimeNs: string;
  ino: string;
}

export interface PlacedRecord {
  kind: 'file' | 'dir' | 'symlink';
  mode: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  target?: string;
  /** Packed chunk refs (`CHUNK_REF` of @skysync/chunking). */
  chunks?: Buffer;
  digest?: Buffer;
  /** What lstat said right after placing: any later difference is drift. */
  stat: StatKey;
}

export interface HeldChunks {
  /** The packed recipe of a file the receiver placed, as it recorded it. */
  recipeOf(path: string): Buffer | null;
  /** Where chunks can be found under the root, by id. */
  locate(ids: Buffer[]): Array<{ path: string; offset: number } | null>;
  /** The record of what is at `path` now, when the receiver placed it and it is unchanged since. */
  current?(path: string): PlacedRecord | null;
}

export interface ReceiverOptions {
  root: string;
  chunker: Chunker;
  held: HeldChunks;
  /** Paths whose bytes no longer match what was recorded: never read as a source, never deleted. */
  untrusted: Set<string>;
  isPlaced: (path: string) => boolean;
  deleteMode: DeleteMode;
  /**
   * Puts a temp file over an existing regular file without waiting for the old one to be freed (the native
   * addon's `replaceFile`); without it, a plain rename.
   */
  replaceFile?: (temp: Buffer, dest: Buffer) => void;
  /** Writes and renames files in batches off this thread; without it (no addon for this platform), one by one. */
  native?: NativeAddon | null;
  /**
   * Remember where every received chunk was written, and say so as each lands: the head of a relayed push
   * serves other nodes from this sync's files while it is still receiving (need mode otherwise remembers only
   * the chunks the plan takes twice).
   */
  onChunk?: (key: string) => void;
}

export interface ReceiveResult {
  placed: Map<string, PlacedRecord>;
  removed: string[];
  forgotten: string[];
  kept: string[];
  failed: FileFailure[];
  written: number;
}

export type Piece =
  | { from: 'disk'; path: string; offset: number; id: Buffer; len: number }
  | { from: 'stream'; id: Buffer; len: number }
  | { from: 'session'; id: Buffer; len: number };

export interface Staged {
  entry: PlanEntry;
  /** The temp file, relative to the root (latin1, as paths). */
  temp: string | null;
  error: string | null;
  /** fstat of the finished temp file: inode, size and mtime survive the rename. */
  stat?: StatKey;
  /** The file in place already has the entry's bytes: only its mode and mtime change. */
  retouch?: PlacedRecord;
}

/** Where a chunk received earlier in this sync sits: `file` settles to the temp file (relative to the root) once
 * its bytes are on disk (small files are written in batches), or to null when that write failed. One promise per
 * file, shared by its chunks. */
export interface SessionChunk {
  file: Promise<string | null>;
  offset: number;
  len: number;
}

export type Writer = Pick<NativeAddon, 'writeFiles' | 'renameFiles'>;
