// Plan entries: what the receiver must make true, one entry per path, in path order. A file's content is a
// list of chunk operations: copy a run of chunks the receiver already holds (in the same path's previous
// version or another file it placed), or take chunks by id (bytes follow in the data stream, or the receiver
// finds them itself and asks for the rest).

import { ByteReader, ByteWriter, ProtocolError, displayPath } from './binary.js';
import { checkRelativePath } from './paths.js';

/** A chunk ref on the wire is the addon's packed chunk ref, passed through as it is: a 32-byte id, then its length
 * (u32 LE). Protocol sits below the addon boundary, so it states the layout for itself; packages/chunking's layout
 * test checks the two agree. */
export const CHUNK_ID_SIZE = 32;
export const CHUNK_REF_SIZE = CHUNK_ID_SIZE + 4;

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

/**
 * The source has this path (a file, or a directory and all below it) but could not read it: the receiver
 * changes nothing there, and `--delete` removes nothing at or below it (as rsync skips deletions after a read
 * error). Sent only to agents with the `keep` capability.
 */
export interface KeepEntry {
  kind: 'keep';
  path: string;
}

export type PlanEntry = FileEntry | DirEntry | SymlinkEntry | DeleteEntry | KeepEntry;

const KIND_FILE = 1;
const KIND_DIR = 2;
const KIND_SYMLINK = 3;
const KIND_DELETE = 4;
const KIND_KEEP = 5;
const OP_COPY = 1;
const OP_CHUNKS = 2;

export function encodeEntry(w: ByteWriter, e: PlanEntry): void {
  switch (e.kind) {
    case 'file':
      w.u8(KIND_FILE).path(e.path).varint(e.mode).varint(e.size).zigzag(e.mtimeSec).varint(e.mtimeNsec);
      w.bytes(e.digest).varint(e.ops.length);
      for (const op of e.ops) {
        if (op.op === 'copy') {
          w.u8(OP_COPY)
            .path(op.from ?? '')
            .varint(op.start)
            .varint(op.count);
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
      w.u8(KIND_DELETE)
        .path(e.path)
        .u8(e.forgetOnly ? 1 : 0);
      break;
    case 'keep':
      w.u8(KIND_KEEP).path(e.path);
      break;
  }
}

/** The longest chunk FastCDC makes with any parameters it accepts (its largest maximum size). */
export const MAX_CHUNK_LENGTH = 16 * 1024 * 1024;

export function decodeEntry(r: ByteReader): PlanEntry {
  const kind = r.u8();
  const path = r.path();
  checkRelativePath(path);
  switch (kind) {
    case KIND_FILE:
      return decodeFile(r, path);
    case KIND_DIR: {
      const mode = r.varint();
      if (mode > 0o7777) throw new ProtocolError(`mode ${mode.toString(8)} is not a permission mode`);
      return { kind: 'dir', path, mode };
    }
    case KIND_SYMLINK: {
      const target = r.path();
      if (target.length === 0 || target.includes('\0')) throw new ProtocolError('the symlink target is empty or holds a NUL byte');
      return { kind: 'symlink', path, target };
    }
    case KIND_DELETE: {
      const forgetOnly = r.u8();
      if (forgetOnly > 1) throw new ProtocolError(`forget-only flag ${forgetOnly} (must be 0 or 1)`);
      return { kind: 'delete', path, forgetOnly: forgetOnly === 1 };
    }
    case KIND_KEEP:
      return { kind: 'keep', path };
    default:
      throw new ProtocolError(`unknown entry kind ${kind}`);
  }
}

function decodeFile(r: ByteReader, path: string): FileEntry {
  const mode = r.varint();
  const size = r.varint();
  const mtimeSec = r.zigzag();
  const mtimeNsec = r.varint();
  if (mode > 0o7777) throw new ProtocolError(`mode ${mode.toString(8)} is not a permission mode`);
  if (mtimeNsec >= 1e9) throw new ProtocolError(`mtime nanoseconds ${mtimeNsec} (must be below 1e9)`);
  const digest = Buffer.from(r.bytes(32));
  const n = r.varint();
  if (n > r.remaining) throw new ProtocolError(`op count ${n} is larger than the frame`);
  const ops: ChunkOp[] = [];
  for (let i = 0; i < n; i++) {
    const op = r.u8();
    if (op === OP_COPY) {
      const from = r.path();
      if (from !== '') checkRelativePath(from);
      const start = r.varint();
      const count = r.varint();
      if (count === 0) throw new ProtocolError(`op ${i}: a copy of no chunks`);
      ops.push({ op: 'copy', from: from === '' ? null : from, start, count });
    } else if (op === OP_CHUNKS) {
      const chunks = Buffer.from(r.blob());
      if (chunks.length === 0 || chunks.length % CHUNK_REF_SIZE !== 0) {
        throw new ProtocolError(`op ${i}: a chunk list of ${chunks.length} bytes (a non-empty multiple of ${CHUNK_REF_SIZE})`);
      }
      for (let o = CHUNK_ID_SIZE; o < chunks.length; o += CHUNK_REF_SIZE) {
        const len = chunks.readUInt32LE(o);
        if (len === 0 || len > MAX_CHUNK_LENGTH) throw new ProtocolError(`op ${i}: a chunk of ${len} bytes (1 to ${MAX_CHUNK_LENGTH})`);
      }
      ops.push({ op: 'chunks', chunks });
    } else {
      throw new ProtocolError(`op ${i}: unknown chunk op ${op}`);
    }
  }
  return { kind: 'file', path, mode, size, mtimeSec, mtimeNsec, digest, ops };
}

export function encodeEntries(entries: PlanEntry[]): Buffer {
  const w = new ByteWriter(256 * entries.length + 64);
  w.varint(entries.length);
  for (const e of entries) encodeEntry(w, e);
  return w.finish();
}

/** A frame of entries; what does not decode is refused naming the entry (its index and path, once known). */
export function decodeEntries(payload: Buffer): PlanEntry[] {
  const r = new ByteReader(payload);
  const out: PlanEntry[] = [];
  let at = 'its entry count';
  try {
    const n = r.varint();
    if (n > payload.length) throw new ProtocolError(`entry count ${n} is larger than the frame`);
    for (let i = 0; i < n; i++) {
      at = `entry ${i}`;
      const start = r.pos;
      try {
        out.push(decodeEntry(r));
      } catch (e) {
        at += pathAt(payload, start);
        throw e;
      }
    }
    at = 'its end';
    r.end();
  } catch (e) {
    throw new ProtocolError(`bad entries message: ${at}: ${(e as Error).message}`);
  }
  return out;
}

/** The path of the entry that starts at `start`, for an error, when that much of it decodes. */
function pathAt(payload: Buffer, start: number): string {
  try {
    const r = new ByteReader(payload);
    r.pos = start + 1;
    const path = displayPath(r.path());
    return ` (${JSON.stringify(path.length > 100 ? `${path.slice(0, 100)}...` : path)})`;
  } catch {
    return '';
  }
}

/** Packed 32-byte chunk ids (the Need message). */
export function decodeIds(payload: Buffer): Buffer[] {
  if (payload.length % CHUNK_ID_SIZE !== 0) throw new ProtocolError(`bad need message: ${payload.length} bytes, not a multiple of ${CHUNK_ID_SIZE}`);
  const out: Buffer[] = [];
  for (let o = 0; o < payload.length; o += CHUNK_ID_SIZE) out.push(payload.subarray(o, o + CHUNK_ID_SIZE));
  return out;
}

export function* iterChunks(packed: Buffer): Generator<{ id: Buffer; len: number }> {
  for (let o = 0; o + CHUNK_REF_SIZE <= packed.length; o += CHUNK_REF_SIZE) {
    yield { id: packed.subarray(o, o + CHUNK_ID_SIZE), len: packed.readUInt32LE(o + CHUNK_ID_SIZE) };
  }
}
