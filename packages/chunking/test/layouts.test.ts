// The packed record layouts of src/layouts.ts against the addon's own (`recordLayouts()`, from
// native/binding/src/layouts.rs): a field moved on one side only fails here, not as corrupt data in a sync.

import { describe, expect, it } from 'vitest';
import { CHUNK_REF, RECORD_LAYOUTS, chunkRefCount, chunkRefId, chunkRefLen, packChunks, readWriteStat, writeChunkRef, writeReadRange } from '../src/index.js';
import * as wire from '@skysync/protocol';
import { nativeForTests } from './helpers.js';

const native = nativeForTests();

describe.skipIf(!native)('record layouts', () => {
  it('match the addon, record by record and field by field', () => {
    expect(native!.recordLayouts()).toEqual(RECORD_LAYOUTS);
  });

  it('the wire states the chunk ref as the addon packs it (plans carry packed refs as they are)', () => {
    expect({ size: wire.CHUNK_REF_SIZE, idSize: wire.CHUNK_ID_SIZE }).toEqual({ size: CHUNK_REF.size, idSize: CHUNK_REF.idSize });
  });

  it('every field starts inside its record', () => {
    for (const [name, { size, ...fields }] of Object.entries(RECORD_LAYOUTS)) {
      for (const [field, at] of Object.entries(fields)) expect(at, `${name}.${field}`).toBeLessThan(size);
    }
  });
});

describe('record helpers', () => {
  it('read and write chunk refs as packChunks lays them out', () => {
    const id = Buffer.alloc(CHUNK_REF.idSize, 7);
    const packed = Buffer.alloc(2 * CHUNK_REF.size);
    writeChunkRef(packed, 1, id, 12345);
    expect(packed.subarray(CHUNK_REF.size)).toEqual(packChunks([{ id, len: 12345 }]));
    expect(chunkRefCount(packed)).toBe(2);
    expect(chunkRefId(packed, 1)).toEqual(id);
    expect(chunkRefLen(packed, 1)).toBe(12345);
    expect(() => chunkRefCount(Buffer.alloc(CHUNK_REF.size + 1))).toThrow(RangeError);
  });

  it('write read ranges with offsets past 4 GiB', () => {
    const ranges = Buffer.alloc(RECORD_LAYOUTS.readRange.size);
    writeReadRange(ranges, 0, 2 ** 40 + 5, 99);
    expect(ranges.readBigUInt64LE(RECORD_LAYOUTS.readRange.offset)).toBe(2n ** 40n + 5n);
    expect(ranges.readUInt32LE(RECORD_LAYOUTS.readRange.len)).toBe(99);
  });

  it('read write stats beyond 2^53 as strings', () => {
    const stats = Buffer.alloc(2 * RECORD_LAYOUTS.writeStat.size);
    const at = RECORD_LAYOUTS.writeStat.size;
    stats.writeBigUInt64LE(2n ** 60n, at + RECORD_LAYOUTS.writeStat.ino);
    stats.writeBigUInt64LE(4096n, at + RECORD_LAYOUTS.writeStat.fileSize);
    stats.writeBigInt64LE(1_700_000_000_123_456_789n, at + RECORD_LAYOUTS.writeStat.mtimeNs);
    expect(readWriteStat(stats, 1)).toEqual({ size: 4096, mtimeNs: '1700000000123456789', ino: String(2n ** 60n) });
  });
});
