import { CHUNK_ID_SIZE, CHUNK_REF, CHUNK_REF_SIZE, chunkRefCount } from './layouts.js';

/**
 * A file's content as chunks: `chunks` packs its chunk refs (`CHUNK_REF`: 32-byte BLAKE3 id, then the length as
 * a u32 little endian). `digest` is the whole-file digest over the recipe (see `DIGEST_PREFIX`).
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

/**
 * The whole-file digest is BLAKE3 over this prefix and then, per chunk, the id and the u32 LE length: exactly
 * the prefix followed by the packed chunks.
 */
export const DIGEST_PREFIX: Buffer = Buffer.from('skysync file digest v1\0', 'latin1');

export function packChunks(list: readonly ChunkRef[]): Buffer {
  const out = Buffer.allocUnsafe(list.length * CHUNK_REF_SIZE);
  let o = 0;
  for (const c of list) {
    if (c.id.length !== CHUNK_ID_SIZE) throw new RangeError(`chunk id must be ${CHUNK_ID_SIZE} bytes, got ${c.id.length}`);
    if (!Number.isInteger(c.len) || c.len < 0 || c.len > 0xffffffff) {
      throw new RangeError(`chunk length must be a u32, got ${c.len}`);
    }
    out.set(c.id, o + CHUNK_REF.id);
    out.writeUInt32LE(c.len, o + CHUNK_REF.len);
    o += CHUNK_REF_SIZE;
  }
  return out;
}

/** The chunks of a packed recipe. Ids are copies, not views into `buf`. */
export function unpackChunks(buf: Buffer): ChunkRef[] {
  const out: ChunkRef[] = new Array<ChunkRef>(chunkRefCount(buf));
  for (let i = 0, o = 0; o < buf.length; i++, o += CHUNK_REF_SIZE) {
    const id = Buffer.from(buf.subarray(o + CHUNK_REF.id, o + CHUNK_REF.id + CHUNK_ID_SIZE));
    out[i] = { id, len: buf.readUInt32LE(o + CHUNK_REF.len) };
  }
  return out;
}

export function chunkCount(recipe: Pick<Recipe, 'chunks'>): number {
  return chunkRefCount(recipe.chunks);
}
