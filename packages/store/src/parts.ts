// Turning the caller's parts of an object (new bytes, file ranges, ranges of stored objects) into the requests a
// store can take. S3's multipart rules shape it: every part but the last is at least 5 MiB, at most 5 GiB, at most
// 10,000 parts. A stored range big enough to be a part of its own is copied on the server (UploadPartCopy); a
// smaller one is read and sent with its neighbours, so an edit in a large object costs about one part of upload.

import fs from 'node:fs/promises';
import type { ObjectPart } from './object-store.js';

export const MiB = 1024 * 1024;
export const S3_MIN_PART = 5 * MiB;
const S3_MAX_PART = 5 * 1024 * MiB;
const S3_MAX_PARTS = 10_000;

/** A piece of data to send, read only when its request goes out (copy pieces through the store's range read). */
export type SendPiece = Exclude<ObjectPart, { kind: 'bytes' }> | { kind: 'bytes'; data: Uint8Array };

export type UploadPart = { kind: 'copy'; key: string; start: number; end: number; etag?: string } | { kind: 'send'; pieces: SendPiece[]; size: number };

export function partSize(part: ObjectPart): number {
  return part.kind === 'bytes' ? part.data.length : part.end - part.start;
}

export function totalSize(parts: readonly ObjectPart[]): number {
  return parts.reduce((sum, part) => sum + partSize(part), 0);
}

/** The first `length` bytes of a piece, and the rest. */
export function splitPiece(piece: SendPiece, length: number): [SendPiece, SendPiece] {
  if (piece.kind === 'bytes')
    return [
      { kind: 'bytes', data: piece.data.subarray(0, length) },
      { kind: 'bytes', data: piece.data.subarray(length) },
    ];
  return [
    { ...piece, end: piece.start + length },
    { ...piece, start: piece.start + length },
  ];
}

/** Pieces cut so none is longer than `max`, so parts made of them stay near their target size. */
export function boundedPieces(parts: readonly ObjectPart[], max: number): SendPiece[] {
  const out: SendPiece[] = [];
  for (const part of parts) {
    let rest: SendPiece = part;
    while (partSize(rest) > max) {
      const [head, tail] = splitPiece(rest, max);
      out.push(head);
      rest = tail;
    }
    if (partSize(rest) > 0) out.push(rest);
  }
  return out;
}

/** The bytes of a send piece; `readStored` reads a range of a stored object. */
export async function readPiece(piece: SendPiece, readStored: (key: string, start: number, end: number, etag?: string) => Promise<Uint8Array>): Promise<Uint8Array> {
  if (piece.kind === 'bytes') return piece.data;
  if (piece.kind === 'copy') return readStored(piece.key, piece.start, piece.end, piece.etag);
  const handle = await fs.open(piece.path, 'r');
  try {
    const buffer = Buffer.allocUnsafe(piece.end - piece.start);
    let filled = 0;
    while (filled < buffer.length) {
      const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, piece.start + filled);
      if (bytesRead === 0) throw new Error(`${piece.path}: shorter than expected (wanted bytes ${piece.start}-${piece.end})`);
      filled += bytesRead;
    }
    return buffer;
  } finally {
    await handle.close();
  }
}

export async function readPieces(pieces: readonly SendPiece[], readStored: (key: string, start: number, end: number, etag?: string) => Promise<Uint8Array>): Promise<Uint8Array> {
  const buffers = await Promise.all(pieces.map((piece) => readPiece(piece, readStored)));
  return buffers.length === 1 ? buffers[0]! : Buffer.concat(buffers);
}

/**
 * The S3 multipart parts for `parts`: stored ranges of at least 5 MiB stay copies; everything else is grouped into
 * sent parts of about `target` bytes. A sent part that would be too small before a copy borrows the copy's first
 * bytes (read and sent), so the copy stays a copy and the borrowed part stays within S3's minimum.
 */
export function planS3Parts(parts: readonly ObjectPart[], target = 8 * MiB): UploadPart[] {
  const total = totalSize(parts);
  const sendTarget = Math.max(target, Math.ceil(total / (S3_MAX_PARTS - 100)));
  const plan: UploadPart[] = [];
  let pending: SendPiece[] = [];
  let pendingSize = 0;
  const flush = (): void => {
    if (pendingSize > 0) plan.push({ kind: 'send', pieces: pending, size: pendingSize });
    pending = [];
    pendingSize = 0;
  };
  const addSend = (piece: SendPiece): void => {
    pending.push(piece);
    pendingSize += partSize(piece);
    if (pendingSize >= sendTarget) flush();
  };
  for (const part of parts) {
    if (part.kind !== 'copy' || partSize(part) < S3_MIN_PART) {
      for (const piece of boundedPieces([part], sendTarget)) addSend(piece);
      continue;
    }
    let copy: SendPiece = part;
    if (pendingSize > 0 && pendingSize < S3_MIN_PART) {
      const borrow = S3_MIN_PART - pendingSize;
      if (partSize(copy) - borrow < S3_MIN_PART) {
        for (const piece of boundedPieces([copy], sendTarget)) addSend(piece);
        continue;
      }
      const [head, tail] = splitPiece(copy, borrow);
      pending.push(head);
      pendingSize += borrow;
      flush();
      copy = tail;
    }
    flush();
    for (const piece of boundedPieces([copy], S3_MAX_PART)) {
      if (piece.kind === 'copy') plan.push({ kind: 'copy', key: piece.key, start: piece.start, end: piece.end, ...(part.etag ? { etag: part.etag } : {}) });
    }
  }
  flush();
  if (plan.length > S3_MAX_PARTS) throw new Error(`an object of ${total} bytes needs ${plan.length} parts, more than S3's ${S3_MAX_PARTS}`);
  return plan;
}
