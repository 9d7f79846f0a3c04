// Plan entries: what the receiver must make true, one entry per path, in path order. A file's content is a
// list of chunk operations: copy a run of chunks the receiver already holds (in the same path's previous
// version or another file it placed), or take chunks by id (bytes follow in the data stream, or the receiver
// finds them itself and asks for the rest).

import { ByteReader, ByteWriter, ProtocolError } from './binary.js';
import { checkRelativePath } from './paths.js';

export const CHUNK_REF_SIZE = 36;

export type ChunkOp =
  /** Chunks [start, start + count) of `from`'s recipe as the receiver holds it (from null: the same path). */
  | { op: 'copy'; from: string | null; start: number; count: number }
  /** Chunks by id, packed 36 bytes each (32-byte id, u32 LE length). */
  | { op: 'chunks'; chunks: Buffer };

export interface FileEntry {
  kind: 'file';
  path: string;
  mode: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  digest: Buffer;
  ops: ChunkOp[];
}

export interface DirEntry {
  kind: 'dir';
  path: string;
  mode: number;
}

export interface SymlinkEntry {
  kind: 'symlink';
  path: string;
  target: string;
}

export interface DeleteEntry {
  kind: 'delete';
  path: string;
  /** Stop tracking the path but leave it on disk (`--no-delete`). */
  forgetOnly: boolean;
}

export type PlanEntry = FileEntry | DirEntry | SymlinkEntry | DeleteEntry;

const KIND_FILE = 1;
const KIND_DIR = 2;
const KIND_SYMLINK = 3;
const KIND_DELETE = 4;
const OP_COPY = 1;
const OP_CHUNKS = 2;

export function encodeEntry(w: ByteWriter, e: PlanEntry): void {
  switch (e.kind) {
    case 'file':
      w.u8(KIND_FILE).path(e.path).varint(e.mode).varint(e.size).zigzag(e.mtimeSec).varint(e.mtimeNsec);
      w.bytes(e.digest).varint(e.ops.length);
      for (const op of e.ops) {
        if (op.op === 'copy') {
          w.u8(OP_COPY).path(op.from ?? '').varint(op.start).varint(op.count);
        } else {
          w.u8(OP_CHUNKS).blob(op.chunks);
        }
      }
      break;
    case 'dir':
      w.u8(KIND_DIR).path(e.path).varint(e.mode);
      break;
    case 'symlink':
      w.u8(KIND_SYMLINK).path(e.path).path(e.target);
      break;
    case 'delete':
      w.u8(KIND_DELETE).path(e.path).u8(e.forgetOnly ? 1 : 0);
      break;
  }
}

export function decodeEntry(r: ByteReader): PlanEntry {
  const kind = r.u8();
  const path = r.path();
  checkRelativePath(path);
  switch (kind) {
    case KIND_FILE: {
      const mode = r.varint();
      const size = r.varint();
      const mtimeSec = r.zigzag();
      const mtimeNsec = r.varint();
      if (mode > 0o7777 || mtimeNsec >= 1e9) throw new ProtocolError(`bad file entry for ${path}`);
      const digest = Buffer.from(r.bytes(32));
      const n = r.varint();
      if (n > r.remaining) throw new ProtocolError('op count larger than the frame');
      const ops: ChunkOp[] = [];
      let total = 0;
      for (let i = 0; i < n; i++) {
        const op = r.u8();
        if (op === OP_COPY) {
          const from = r.path();
          if (from !== '') checkRelativePath(from);
          const start = r.varint();
          const count = r.varint();
          if (count === 0) throw new ProtocolError('empty copy op');
          ops.push({ op: 'copy', from: from === '' ? null : from, start, count });
        } else if (op === OP_CHUNKS) {
          const chunks = Buffer.from(r.blob());
          if (chunks.length === 0 || chunks.length % CHUNK_REF_SIZE !== 0) throw new ProtocolError('bad chunk list');
          for (let o = 32; o < chunks.length; o += CHUNK_REF_SIZE) total += chunks.readUInt32LE(o);
          ops.push({ op: 'chunks', chunks });
        } else {
          throw new ProtocolError(`unknown chunk op ${op}`);
        }
      }
      return { kind: 'file', path, mode, size, mtimeSec, mtimeNsec, digest, ops };
    }
    case KIND_DIR: {
      const mode = r.varint();
      if (mode > 0o7777) throw new ProtocolError(`bad mode for ${path}`);
      return { kind: 'dir', path, mode };
    }
    case KIND_SYMLINK: {
      const target = r.path();
      if (target.length === 0 || target.includes('\0')) throw new ProtocolError(`bad symlink target for ${path}`);
      return { kind: 'symlink', path, target };
    }
    case KIND_DELETE:
      return { kind: 'delete', path, forgetOnly: r.u8() === 1 };
    default:
      throw new ProtocolError(`unknown entry kind ${kind}`);
  }
}

export function encodeEntries(entries: PlanEntry[]): Buffer {
  const w = new ByteWriter(256 * entries.length + 64);
  w.varint(entries.length);
  for (const e of entries) encodeEntry(w, e);
  return w.finish();
}

export function decodeEntries(payload: Buffer): PlanEntry[] {
  const r = new ByteReader(payload);
  const n = r.varint();
  if (n > payload.length) throw new ProtocolError('entry count larger than the frame');
  const out: PlanEntry[] = [];
  for (let i = 0; i < n; i++) out.push(decodeEntry(r));
  r.end();
  return out;
}

/** Packed 32-byte chunk ids (the Need message). */
export function decodeIds(payload: Buffer): Buffer[] {
  if (payload.length % 32 !== 0) throw new ProtocolError('need list is not a multiple of 32 bytes');
  const out: Buffer[] = [];
  for (let o = 0; o < payload.length; o += 32) out.push(payload.subarray(o, o + 32));
  return out;
}

export function* iterChunks(packed: Buffer): Generator<{ id: Buffer; len: number }> {
  for (let o = 0; o + CHUNK_REF_SIZE <= packed.length; o += CHUNK_REF_SIZE) {
    yield { id: packed.subarray(o, o + 32), len: packed.readUInt32LE(o + 32) };
  }
}
