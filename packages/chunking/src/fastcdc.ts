// FastCDC v2020 cut points, bit for bit the same as the Rust crate `fastcdc` 4.0.1 (`v2020::FastCDC` with
// `Normalization::Level1` and no seed), which the native core uses.
//
// The gear hash is a 64-bit value updated as `hash = (hash << 1) + GEAR[byte]`; the crate handles two bytes a
// step with a pre-shifted table and pre-shifted masks. Every mask has bits only below bit 48 (49 with the
// shift), and shifts and additions only carry upwards, so the low 56 bits of the hash are enough. They are
// kept as two int32 values: `lo` holds bits 0..23 and `hi` bits 24..55 (wrapping), which keeps every
// intermediate inside int32/small-double range for V8 and needs no BigInt.

import { GEAR_HEX } from './gear.js';
import type { ChunkParams } from './params.js';
import { validateParams } from './params.js';

const LO_BITS = 24;
const LO_MASK = 0xffffff;

/** Normalization masks by number of bits (the crate's `MASKS`, same values; 0 through 4 unused). */
const MASKS: readonly bigint[] = [
  0n,
  0n,
  0n,
  0n,
  0n,
  0x0000000001804110n, // 5 (normalization level 3 only)
  0x0000000001803110n, // 6: 64 B
  0x0000000018035100n, // 7: 128 B
  0x0000001800035300n, // 8: 256 B
  0x0000019000353000n, // 9: 512 B
  0x0000590003530000n, // 10: 1 KiB
  0x0000d90003530000n, // 11: 2 KiB
  0x0000d90103530000n, // 12: 4 KiB
  0x0000d90303530000n, // 13: 8 KiB
  0x0000d90313530000n, // 14: 16 KiB
  0x0000d90f03530000n, // 15: 32 KiB
  0x0000d90303537000n, // 16: 64 KiB
  0x0000d90703537000n, // 17: 128 KiB
  0x0000d90707537000n, // 18: 256 KiB
  0x0000d91707537000n, // 19: 512 KiB
  0x0000d91747537000n, // 20: 1 MiB
  0x0000d91767537000n, // 21: 2 MiB
  0x0000d93767537000n, // 22: 4 MiB
  0x0000d93777537000n, // 23: 8 MiB
  0x0000d93777577000n, // 24: 16 MiB
  0x0000db3777577000n, // 25 (normalization level 3 only)
];

const U64 = (1n << 64n) - 1n;

function splitLo(v: bigint): number {
  return Number(v & BigInt(LO_MASK));
}
function splitHi(v: bigint): number {
  return Number((v >> BigInt(LO_BITS)) & 0xffffffffn) | 0;
}

const G_LO = new Int32Array(256);
const G_HI = new Int32Array(256);
const GLS_LO = new Int32Array(256);
const GLS_HI = new Int32Array(256);
{
  const hex = GEAR_HEX.replace(/\s+/g, '');
  if (hex.length !== 256 * 16) throw new Error('gear table is damaged');
  for (let i = 0; i < 256; i++) {
    const g = BigInt('0x' + hex.slice(i * 16, i * 16 + 16));
    const ls = (g << 1n) & U64;
    G_LO[i] = splitLo(g);
    G_HI[i] = splitHi(g);
    GLS_LO[i] = splitLo(ls);
    GLS_HI[i] = splitHi(ls);
  }
}

/** The gear table as 64-bit values, for tests. */
export function gearTable(): bigint[] {
  const hex = GEAR_HEX.replace(/\s+/g, '');
  return Array.from({ length: 256 }, (_, i) => BigInt('0x' + hex.slice(i * 16, i * 16 + 16)));
}

/** Parameters prepared for `cutLength`: sizes and the four masks split into lo/hi halves. */
export interface Cutter {
  readonly minSize: number;
  readonly avgSize: number;
  readonly maxSize: number;
  readonly sLo: number;
  readonly sHi: number;
  readonly lLo: number;
  readonly lHi: number;
  readonly sLsLo: number;
  readonly sLsHi: number;
  readonly lLsLo: number;
  readonly lLsHi: number;
  /** The two normalization masks as 32-bit halves, for the WebAssembly loop (./cdc-wasm.ts). */
  readonly s32Lo: number;
  readonly s32Hi: number;
  readonly l32Lo: number;
  readonly l32Hi: number;
}

/**
 * round(log2(v)) as the crate computes it (`(v as f64).log2().round()`), in integers: for an integer v the
 * true log2 is never within f64 rounding error of k + 0.5, so comparing v² with 2^(2k+1) gives the same answer.
 */
export function roundedLog2(v: number): number {
  let k = 31 - Math.clz32(v);
  if (v * v >= 2 ** (2 * k + 1)) k++;
  return k;
}

export function makeCutter(params: ChunkParams): Cutter {
  validateParams(params);
  const bits = roundedLog2(params.avgSize);
  const s = MASKS[bits + 1];
  const l = MASKS[bits - 1];
  if (s === undefined || l === undefined) throw new RangeError(`no mask for average ${params.avgSize}`);
  const sLs = (s << 1n) & U64;
  const lLs = (l << 1n) & U64;
  return {
    minSize: params.minSize,
    avgSize: params.avgSize,
    maxSize: params.maxSize,
    sLo: splitLo(s),
    sHi: splitHi(s),
    lLo: splitLo(l),
    lHi: splitHi(l),
    sLsLo: splitLo(sLs),
    sLsHi: splitHi(sLs),
    lLsLo: splitLo(lLs),
    lLsHi: splitHi(lLs),
    s32Lo: Number(s & 0xffffffffn) | 0,
    s32Hi: Number(s >> 32n) | 0,
    l32Lo: Number(l & 0xffffffffn) | 0,
    l32Hi: Number(l >> 32n) | 0,
  };
}

/**
 * Length of the chunk that starts at `start`, given `available` bytes from there (the crate's `cut_gear`).
 * Never reads more than `maxSize` bytes past `start`; when `available >= maxSize` the answer does not depend on
 * anything after the first `maxSize` bytes, which is what makes streaming with a window exact.
 */
export function cutLength(src: Uint8Array, start: number, available: number, c: Cutter): number {
  let remaining = available;
  if (remaining <= c.minSize) return remaining;
  let center = c.avgSize;
  if (remaining > c.maxSize) remaining = c.maxSize;
  else if (remaining < center) center = remaining;

  // Bytes are taken in pairs from index floor(min/2)*2 (so an odd minimum starts one byte early, as in the crate).
  let a = start + (c.minSize - (c.minSize & 1));
  const end1 = start + (center - (center & 1));
  const end2 = start + (remaining - (remaining & 1));
  let lo = 0;
  let hi = 0;
  let x = 0;

  let mLo = c.sLsLo;
  let mHi = c.sLsHi;
  let nLo = c.sLo;
  let nHi = c.sHi;
  while (a < end1) {
    x = src[a]!;
    lo = (lo << 2) + GLS_LO[x]!;
    hi = ((hi << 2) + GLS_HI[x]! + (lo >>> LO_BITS)) | 0;
    lo &= LO_MASK;
    if (((lo & mLo) | (hi & mHi)) === 0) return a - start;
    x = src[a + 1]!;
    lo = lo + G_LO[x]!;
    hi = (hi + G_HI[x]! + (lo >>> LO_BITS)) | 0;
    lo &= LO_MASK;
    if (((lo & nLo) | (hi & nHi)) === 0) return a + 1 - start;
    a += 2;
  }
  mLo = c.lLsLo;
  mHi = c.lLsHi;
  nLo = c.lLo;
  nHi = c.lHi;
  while (a < end2) {
    x = src[a]!;
    lo = (lo << 2) + GLS_LO[x]!;
    hi = ((hi << 2) + GLS_HI[x]! + (lo >>> LO_BITS)) | 0;
    lo &= LO_MASK;
    if (((lo & mLo) | (hi & mHi)) === 0) return a - start;
    x = src[a + 1]!;
    lo = lo + G_LO[x]!;
    hi = (hi + G_HI[x]! + (lo >>> LO_BITS)) | 0;
    lo &= LO_MASK;
    if (((lo & nLo) | (hi & nHi)) === 0) return a + 1 - start;
    a += 2;
  }
  return remaining;
}

/**
 * The cuts of `src[0..filled)` that are final, as lengths pushed onto `lens` (cleared first): all of them at
 * EOF, otherwise only those with at least `maxSize` bytes ahead. Returns the bytes they cover.
 */
export function finalCutsJs(src: Uint8Array, filled: number, eof: boolean, c: Cutter, lens: number[]): number {
  lens.length = 0;
  let start = 0;
  while (start < filled) {
    const rest = filled - start;
    if (!eof && rest < c.maxSize) break;
    const len = cutLength(src, start, rest, c);
    lens.push(len);
    start += len;
  }
  return start;
}
