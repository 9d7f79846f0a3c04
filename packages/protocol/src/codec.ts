// The chunk-data stream. The sender groups literal chunk bytes into blocks (DATA frames); each block is
// compressed as part of one continuous stream (zstd, flushed per block so the receiver can decode it at once)
// or on its own (deflate, for agents without the native addon). Decoders bound their output.

import zlib from 'node:zlib';
import type { Compression } from './messages.js';
import { ProtocolError } from './binary.js';

/** Raw bytes per DATA frame before compression. */
export const DATA_BLOCK = 1024 * 1024;
/** What one DATA frame may expand to. */
export const MAX_BLOCK_OUTPUT = 2 * DATA_BLOCK;

export interface ZstdBinding {
  ZstdEncoder: new (level: number) => { write(b: Buffer): Buffer; flush(): Buffer; finish(): Buffer; setLevel?(level: number): void };
  ZstdDecoder: new (maxOutput: number) => { write(b: Buffer): Buffer };
}

export interface BlockEncoder {
  encode(raw: Buffer): Buffer;
  /** Present when the codec has levels and can change them mid-stream (zstd): later blocks use `level`. */
  setLevel?(level: number): void;
}

export interface BlockDecoder {
  decode(payload: Buffer): Buffer;
}

export function supportedCompressions(zstd: ZstdBinding | null): Compression[] {
  return zstd ? ['zstd', 'deflate', 'none'] : ['deflate', 'none'];
}

/** The first of our preferences that the peer supports. */
export function chooseCompression(ours: Compression[], theirs: Compression[]): Compression {
  return ours.find((c) => theirs.includes(c)) ?? 'none';
}

export function createBlockEncoder(c: Compression, zstd: ZstdBinding | null, level = 3): BlockEncoder {
  switch (c) {
    case 'none':
      return { encode: (raw) => raw };
    case 'deflate':
      return { encode: (raw) => zlib.deflateRawSync(raw, { level: 1 }) };
    case 'zstd': {
      if (!zstd) throw new ProtocolError('zstd needs the native addon');
      const enc = new zstd.ZstdEncoder(level);
      return {
        encode: (raw) => {
          const a = enc.write(raw);
          const b = enc.flush();
          return a.length ? Buffer.concat([a, b]) : b;
        },
        setLevel: enc.setLevel ? (l) => enc.setLevel!(l) : undefined,
      };
    }
  }
}

export function createBlockDecoder(c: Compression, zstd: ZstdBinding | null): BlockDecoder {
  switch (c) {
    case 'none':
      return {
        decode: (p) => {
          if (p.length > MAX_BLOCK_OUTPUT) throw new ProtocolError('data block too large');
          return p;
        },
      };
    case 'deflate':
      return {
        decode: (p) => {
          try {
            return zlib.inflateRawSync(p, { maxOutputLength: MAX_BLOCK_OUTPUT });
          } catch (e) {
            throw new ProtocolError(`bad deflate block: ${(e as Error).message}`);
          }
        },
      };
    case 'zstd': {
      if (!zstd) throw new ProtocolError('zstd needs the native addon');
      const dec = new zstd.ZstdDecoder(MAX_BLOCK_OUTPUT);
      return {
        decode: (p) => {
          try {
            return dec.write(p);
          } catch (e) {
            throw new ProtocolError(`bad zstd block: ${(e as Error).message}`);
          }
        },
      };
    }
    default:
      throw new ProtocolError(`unknown compression ${JSON.stringify(c)}`);
  }
}
