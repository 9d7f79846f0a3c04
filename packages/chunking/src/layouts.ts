// The packed records that cross the addon boundary, each laid out once on this side: sizes and field offsets,
// little endian. The Rust side lays them out in native/binding/src/layouts.rs (the chunk ref in native/core's
// chunk.rs); the addon's `recordLayouts()` returns those, and test/layouts.test.ts fails when the two drift.

/**
 * A chunk ref: a chunk's 32-byte BLAKE3 id, then its length (u32). A recipe's `chunks`, a plan's chunk list and
 * `writeFiles`' refs are chunk refs packed one after another.
 */
export const CHUNK_REF = Object.freeze({ size: 36, id: 0, idSize: 32, len: 32 } as const);
export const CHUNK_REF_SIZE = CHUNK_REF.size;
export const CHUNK_ID_SIZE = CHUNK_REF.idSize;

/** One entry of `Tree.updatePacked`: what an agent placed (kind 0 file, 1 dir, 2 symlink) and its stat after. */
export const PLACED_RECORD = Object.freeze({
  size: 48,
  kind: 0, // u8, then 3 unused bytes
  mode: 4, // u32
  fileSize: 8, // u64
  mtimeSec: 16, // i64
  mtimeNsec: 24, // u32
  chunkCount: 28, // u32
  observedMtimeNs: 32, // i64
  ino: 40, // u64
} as const);

/** One file of `writeFiles`' layout buffer. */
export const WRITE_RECORD = Object.freeze({
  size: 56,
  fileSize: 0, // u32
  chunkCount: 4, // u32
  mode: 8, // u32
  mtimeNsec: 12, // u32
  mtimeSec: 16, // i64
  digest: 24, // 32 bytes
} as const);

/** One file of `writeFiles`' result `stats`, as fstat saw the finished file (zeros for a file that failed). */
export const WRITE_STAT = Object.freeze({
  size: 24,
  ino: 0, // u64
  fileSize: 8, // u64
  mtimeNs: 16, // i64
} as const);

/** One range of `readRanges`. */
export const READ_RANGE = Object.freeze({
  size: 12,
  offset: 0, // u64
  len: 8, // u32
} as const);

/** Every layout by the name the addon's `recordLayouts()` uses. */
export const RECORD_LAYOUTS = Object.freeze({
  chunkRef: CHUNK_REF,
  placedRecord: PLACED_RECORD,
  writeRecord: WRITE_RECORD,
  writeStat: WRITE_STAT,
  readRange: READ_RANGE,
});

/** How many chunk refs `packed` holds; a RangeError when its length is not a whole number of them. */
export function chunkRefCount(packed: Uint8Array): number {
  if (packed.length % CHUNK_REF_SIZE !== 0) {
    throw new RangeError(`packed chunks must be a multiple of ${CHUNK_REF_SIZE} bytes, got ${packed.length}`);
  }
  return packed.length / CHUNK_REF_SIZE;
}

/** The id of chunk ref `i` of `packed`, as a view (not a copy). */
export function chunkRefId(packed: Buffer, i: number): Buffer {
  const at = i * CHUNK_REF_SIZE + CHUNK_REF.id;
  return packed.subarray(at, at + CHUNK_ID_SIZE);
}

/** The length of chunk ref `i` of `packed`. */
export function chunkRefLen(packed: Buffer, i: number): number {
  return packed.readUInt32LE(i * CHUNK_REF_SIZE + CHUNK_REF.len);
}

/** Writes chunk ref `i` of `packed`. */
export function writeChunkRef(packed: Buffer, i: number, id: Uint8Array, len: number): void {
  packed.set(id.subarray(0, CHUNK_ID_SIZE), i * CHUNK_REF_SIZE + CHUNK_REF.id);
  packed.writeUInt32LE(len, i * CHUNK_REF_SIZE + CHUNK_REF.len);
}

/** Writes range `i` of a `readRanges` buffer; offsets beyond 2^53 do not occur (files that large are not read). */
export function writeReadRange(ranges: Buffer, i: number, offset: number, len: number): void {
  const at = i * READ_RANGE.size;
  ranges.writeUInt32LE(offset % 0x1_0000_0000, at + READ_RANGE.offset);
  ranges.writeUInt32LE(Math.floor(offset / 0x1_0000_0000), at + READ_RANGE.offset + 4);
  ranges.writeUInt32LE(len, at + READ_RANGE.len);
}

/** File `i`'s stat from `writeFiles`' `stats`: inode and nanosecond mtime as decimal strings (beyond 2^53). */
export function readWriteStat(stats: Buffer, i: number): { size: number; mtimeNs: string; ino: string } {
  const at = i * WRITE_STAT.size;
  return {
    size: Number(stats.readBigUInt64LE(at + WRITE_STAT.fileSize)),
    mtimeNs: stats.readBigInt64LE(at + WRITE_STAT.mtimeNs).toString(),
    ino: stats.readBigUInt64LE(at + WRITE_STAT.ino).toString(),
  };
}
