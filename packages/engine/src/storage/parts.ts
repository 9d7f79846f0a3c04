// A changed large file as a write that reuses the bucket's copy: its new recipe (content-defined chunks) is laid
// against the recipe of the version in the bucket; every chunk the old version has becomes a range copied inside
// the bucket, the rest a range of the local file read when sent. The store turns these into S3 UploadPartCopy or
// GCS compose pieces (packages/store).

import type { ObjectPart } from '@skysync/store';

const CHUNK_RECORD = 36;
const ID_BYTES = 32;
/** A copied range shorter than this is sent instead: one more request costs more than the bytes. */
const MIN_COPY = 1024 * 1024;

interface Chunk {
  id: string;
  length: number;
}

function chunksOf(packed: Buffer): Chunk[] {
  const out: Chunk[] = [];
  for (let at = 0; at + CHUNK_RECORD <= packed.length; at += CHUNK_RECORD) {
    out.push({ id: packed.subarray(at, at + ID_BYTES).toString('hex'), length: packed.readUInt32LE(at + ID_BYTES) });
  }
  return out;
}

/** Where each chunk id first occurs in the stored version. */
function offsetsOf(chunks: Chunk[]): Map<string, number> {
  const offsets = new Map<string, number>();
  let offset = 0;
  for (const chunk of chunks) {
    if (!offsets.has(chunk.id)) offsets.set(chunk.id, offset);
    offset += chunk.length;
  }
  return offsets;
}

type Range = { kind: 'copy'; start: number; end: number } | { kind: 'file'; start: number; end: number };

/** Consecutive ranges of the new content, each copied from the old version or read from the file. */
function rangesOf(oldChunks: Chunk[], newChunks: Chunk[]): Range[] {
  const old = offsetsOf(oldChunks);
  const ranges: Range[] = [];
  let offset = 0;
  for (const chunk of newChunks) {
    const from = old.get(chunk.id);
    const last = ranges[ranges.length - 1];
    if (from !== undefined) {
      if (last?.kind === 'copy' && last.end === from) last.end += chunk.length;
      else ranges.push({ kind: 'copy', start: from, end: from + chunk.length });
    } else if (last?.kind === 'file' && last.end === offset) {
      last.end += chunk.length;
    } else {
      ranges.push({ kind: 'file', start: offset, end: offset + chunk.length });
    }
    offset += chunk.length;
  }
  return ranges;
}

/**
 * The parts of `key`'s new version: copies of `etag` (the stored version, whose recipe is `oldRecipe`) where the
 * chunks are unchanged, ranges of `filePath` elsewhere. A copy pinned to `etag` fails the write if the stored
 * object changed meanwhile, so versions are never mixed.
 */
export function deltaParts(key: string, etag: string, oldRecipe: Buffer, filePath: string, newRecipe: Buffer): ObjectPart[] {
  const parts: ObjectPart[] = [];
  let offset = 0;
  for (const range of rangesOf(chunksOf(oldRecipe), chunksOf(newRecipe))) {
    const length = range.end - range.start;
    const last = parts[parts.length - 1];
    if (range.kind === 'copy' && length >= MIN_COPY) {
      parts.push({ kind: 'copy', key, start: range.start, end: range.end, etag });
    } else if (last?.kind === 'file' && last.end === offset) {
      last.end += length;
    } else {
      parts.push({ kind: 'file', path: filePath, start: offset, end: offset + length });
    }
    offset += length;
  }
  return parts;
}

/** The whole local file as one part (an empty file as no bytes). */
export function fileParts(filePath: string, size: number): ObjectPart[] {
  return size === 0 ? [{ kind: 'bytes', data: new Uint8Array(0) }] : [{ kind: 'file', path: filePath, start: 0, end: size }];
}
