// Shared by the chunking tests: the golden-vector inputs and a small seeded PRNG.

import { readFileSync } from 'node:fs';
import type { ChunkParams, NativeAddon } from '../src/index.js';
import { loadNative, nativeLoadErrors } from '../src/index.js';

/** True when the run deliberately goes without the addon (SKYSYNC_NO_NATIVE=1): native comparisons skip. */
export const NATIVE_DISABLED = process.env.SKYSYNC_NO_NATIVE === '1';

/** The addon for comparisons; a missing addon fails the tests unless SKYSYNC_NO_NATIVE=1. */
export function nativeForTests(): NativeAddon | null {
  const addon = loadNative();
  if (!addon && !NATIVE_DISABLED) {
    throw new Error(`the native addon did not load (build it: cd native && pnpm build; or set SKYSYNC_NO_NATIVE=1 to skip ` + `the comparisons): ${nativeLoadErrors().join('; ')}`);
  }
  return addon;
}

const U64 = (1n << 64n) - 1n;

/**
 * xorshift64 (13, 7, 17), as in native/core/examples/golden.rs: each state is emitted as 8 little-endian bytes,
 * the output is truncated to `len` and every byte ANDed with `mask`.
 */
export function xorshift64Bytes(len: number, seed: bigint, mask = 0xff): Buffer {
  const words = Math.ceil(len / 8);
  const out = new BigUint64Array(words);
  let s = seed & U64;
  for (let i = 0; i < words; i++) {
    s ^= (s << 13n) & U64;
    s ^= s >> 7n;
    s ^= (s << 17n) & U64;
    out[i] = s;
  }
  const bytes = Buffer.from(out.buffer, 0, len);
  if (mask !== 0xff) for (let i = 0; i < len; i++) bytes[i]! &= mask;
  return bytes;
}

export type GoldenInput =
  | { kind: 'hex'; hex: string }
  | { kind: 'fill'; byte: number; len: number }
  | { kind: 'text'; text: string; repeat: number }
  | { kind: 'xorshift'; seed: string; len: number; mask: number };

export interface GoldenCase {
  input: string;
  params: string;
  size: number;
  digest: string;
  lengths: number[];
  ids: string[];
}

export interface Golden {
  params: Record<string, ChunkParams>;
  inputs: Record<string, GoldenInput>;
  cases: GoldenCase[];
}

export function loadGolden(): Golden {
  return JSON.parse(readFileSync(new URL('./golden.json', import.meta.url), 'utf8')) as Golden;
}

export function goldenBytes(d: GoldenInput): Buffer {
  switch (d.kind) {
    case 'hex':
      return Buffer.from(d.hex, 'hex');
    case 'fill':
      return Buffer.alloc(d.len, d.byte);
    case 'text':
      return Buffer.from(d.text.repeat(d.repeat), 'utf8');
    case 'xorshift':
      return xorshift64Bytes(d.len, BigInt(d.seed), d.mask);
  }
}

/** A seeded 32-bit PRNG (xorshift32 with a splitmix-style seed scramble); fast enough to fill megabytes. */
export class Rng {
  private s: number;

  constructor(seed: number) {
    let z = (seed + 0x9e3779b9) | 0;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    this.s = (z ^ (z >>> 16)) | 0 || 0x6d2b79f5;
  }

  u32(): number {
    let s = this.s;
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    this.s = s;
    return s >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  /** Log-uniform integer in [lo, hi]. */
  logInt(lo: number, hi: number): number {
    const v = Math.round(Math.exp(Math.log(lo) + this.float() * (Math.log(hi) - Math.log(lo))));
    return Math.min(hi, Math.max(lo, v));
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!;
  }

  fill(buf: Uint8Array): void {
    const words = buf.length >>> 2;
    if (buf.byteOffset % 4 === 0) {
      const u32 = new Uint32Array(buf.buffer, buf.byteOffset, words);
      for (let i = 0; i < words; i++) u32[i] = this.u32();
    } else {
      for (let i = 0; i < words * 4; i++) buf[i] = this.u32() & 0xff;
    }
    for (let i = words * 4; i < buf.length; i++) buf[i] = this.u32() & 0xff;
  }
}

export function lengthsOf(chunks: Buffer): number[] {
  const out: number[] = [];
  for (let o = 0; o < chunks.length; o += 36) out.push(chunks.readUInt32LE(o + 32));
  return out;
}

export function idsOf(chunks: Buffer): string[] {
  const out: string[] = [];
  for (let o = 0; o < chunks.length; o += 36) out.push(chunks.toString('hex', o, o + 32));
  return out;
}
