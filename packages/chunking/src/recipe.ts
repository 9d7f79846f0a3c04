/**
 * A file's content as chunks: `chunks` packs each chunk as its 32-byte BLAKE3 id followed by its length as a
 * u32 little endian, 36 bytes a chunk (the native addon's layout). `digest` is the whole-file digest over the
 * recipe (see `DIGEST_PREFIX`).
 */
export interface Recipe {
  size: number;
  digest: Buffer;
  chunks: Buffer;
}

export interface ChunkRef {
  id: Buffer;
  len: number;
}

export const ID_BYTES = 32;
export const PACKED_CHUNK_BYTES = 36;

/**
 * The whole-file digest is BLAKE3 over this prefix and then, per chunk, the id and the u32 LE length: exactly
 * the prefix followed by the packed chunks.
 */
export const DIGEST_PREFIX: Buffer = Buffer.from('skysync file digest v1\0', 'latin1');

export function packChunks(list: readonly ChunkRef[]): Buffer {
  const out = Buffer.allocUnsafe(list.length * PACKED_CHUNK_BYTES);
  let o = 0;
  for (const c of list) {
    if (c.id.length !== ID_BYTES) throw new RangeError(`chunk id must be ${ID_BYTES} bytes, got ${c.id.length}`);
    if (!Number.isInteger(c.len) || c.len < 0 || c.len > 0xffffffff) {
      throw new RangeError(`chunk length must be a u32, got ${c.len}`);
    }
    out.set(c.id, o);
    out.writeUInt32LE(c.len, o + ID_BYTES);
    o += PACKED_CHUNK_BYTES;
  }
  return out;
}

function checkPacked(buf: Uint8Array): void {
  if (buf.length % PACKED_CHUNK_BYTES !== 0) {
    throw new RangeError(`packed chunks must be a multiple of ${PACKED_CHUNK_BYTES} bytes, got ${buf.length}`);
  }
}

/** The chunks of a packed recipe. Ids are copies, not views into `buf`. */
export function unpackChunks(buf: Buffer): ChunkRef[] {
  checkPacked(buf);
  const out: ChunkRef[] = new Array<ChunkRef>(buf.length / PACKED_CHUNK_BYTES);
  for (let i = 0, o = 0; o < buf.length; i++, o += PACKED_CHUNK_BYTES) {
    out[i] = { id: Buffer.from(buf.subarray(o, o + ID_BYTES)), len: buf.readUInt32LE(o + ID_BYTES) };
  }
  return out;
}

export function chunkCount(recipe: Pick<Recipe, 'chunks'>): number {
  checkPacked(recipe.chunks);
  return recipe.chunks.length / PACKED_CHUNK_BYTES;
}
