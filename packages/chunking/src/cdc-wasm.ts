// The FastCDC inner loop as a tiny WebAssembly function, assembled here from opcodes (no binary blob, no
// toolchain). WebAssembly has native 64-bit integers, so the gear hash runs as the crate writes it, at two to
// three times the speed of the split-int32 JavaScript loop in ./fastcdc.ts, which stays as the reference and
// as the path used when WebAssembly is unavailable. Both are checked against the Rust golden vectors.
//
// Memory layout: the gear table (256 little-endian u64) at 0, the bytes being cut from DATA on.

import type { Cutter } from './fastcdc.js';
import { gearTable } from './fastcdc.js';

const DATA = 4096;
const PAGE = 65536;

// Opcodes used below.
const OP = {
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  else: 0x05,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  return: 0x0f,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  i64Load: 0x29,
  i32Load8u: 0x2d,
  i32Const: 0x41,
  i64Const: 0x42,
  i64Eqz: 0x50,
  i32LtU: 0x49,
  i32GtU: 0x4b,
  i32LeU: 0x4d,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32Sub: 0x6b,
  i32And: 0x71,
  i32Shl: 0x74,
  i64Add: 0x7c,
  i64And: 0x83,
  i64Or: 0x84,
  i64Shl: 0x86,
  i64ExtendI32U: 0xad,
} as const;
const VOID = 0x40;
const I32 = 0x7f;
const I64 = 0x7e;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function name(s: string): number[] {
  return [...uleb(s.length), ...Array.from(Buffer.from(s, 'utf8'))];
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

// cut(p, n, min, avg, max, msLo, msHi, mlLo, mlHi) -> chunk length: the crate's `cut_gear` over the n bytes at p.
const P = 0;
const N = 1;
const MIN = 2;
const AVG = 3;
const MAX = 4;
const MS_LO = 5;
const MS_HI = 6;
const ML_LO = 7;
const ML_HI = 8;
const CENTER = 9;
const I = 10;
const END1 = 11;
const END2 = 12;
const MS = 13;
const ML = 14;
const H = 15;

const get = (i: number): number[] => [OP.localGet, i];
const set = (i: number): number[] => [OP.localSet, i];

/** p + (x & ~1) */
const evenFrom = (x: number): number[] => [...get(P), ...get(x), OP.i32Const, 0x7e, OP.i32And, OP.i32Add];

/** mask = lo | hi << 32 */
const joinMask = (lo: number, hi: number, to: number): number[] => [...get(lo), OP.i64ExtendI32U, ...get(hi), OP.i64ExtendI32U, OP.i64Const, 32, OP.i64Shl, OP.i64Or, ...set(to)];

/** h = (h << 1) + gear[mem[i + off]]; if (h & mask) == 0 return i + off - p */
const step = (mask: number, off: number): number[] => [
  ...get(H),
  OP.i64Const,
  1,
  OP.i64Shl,
  ...get(I),
  OP.i32Load8u,
  0,
  off,
  OP.i32Const,
  3,
  OP.i32Shl,
  OP.i64Load,
  3,
  0,
  OP.i64Add,
  OP.localTee,
  H,
  ...get(mask),
  OP.i64And,
  OP.i64Eqz,
  OP.if,
  VOID,
  ...get(I),
  ...(off ? [OP.i32Const, off, OP.i32Add] : []),
  ...get(P),
  OP.i32Sub,
  OP.return,
  OP.end,
];

/** while (i < end) { two steps; i += 2 }: the crate takes bytes in pairs, from an even offset to an even end. */
const pairLoop = (end: number, mask: number): number[] => [
  OP.block,
  VOID,
  OP.loop,
  VOID,
  ...get(I),
  ...get(end),
  OP.i32GeU,
  OP.brIf,
  1,
  ...step(mask, 0),
  ...step(mask, 1),
  ...get(I),
  OP.i32Const,
  2,
  OP.i32Add,
  ...set(I),
  OP.br,
  0,
  OP.end,
  OP.end,
];

const body: number[] = [
  // locals: center, i, end1, end2 (i32); ms, ml, h (i64)
  2,
  4,
  I32,
  3,
  I64,
  // if (n <= min) return n
  ...get(N),
  ...get(MIN),
  OP.i32LeU,
  OP.if,
  VOID,
  ...get(N),
  OP.return,
  OP.end,
  // center = avg; if (n > max) n = max; else if (n < center) center = n
  ...get(AVG),
  ...set(CENTER),
  ...get(N),
  ...get(MAX),
  OP.i32GtU,
  OP.if,
  VOID,
  ...get(MAX),
  ...set(N),
  OP.else,
  ...get(N),
  ...get(CENTER),
  OP.i32LtU,
  OP.if,
  VOID,
  ...get(N),
  ...set(CENTER),
  OP.end,
  OP.end,
  ...evenFrom(MIN),
  ...set(I),
  ...evenFrom(CENTER),
  ...set(END1),
  ...evenFrom(N),
  ...set(END2),
  ...joinMask(MS_LO, MS_HI, MS),
  ...joinMask(ML_LO, ML_HI, ML),
  ...pairLoop(END1, MS),
  ...pairLoop(END2, ML),
  ...get(N),
  OP.end,
];

function moduleBytes(): Uint8Array {
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, [1, 0x60, 9, I32, I32, I32, I32, I32, I32, I32, I32, I32, 1, I32]), // type
    ...section(3, [1, 0]), // function 0 has type 0
    ...section(5, [1, 0x00, 1]), // one memory, at least 1 page
    ...section(7, [2, ...name('cut'), 0x00, 0, ...name('mem'), 0x02, 0]), // exports
    ...section(10, [1, ...uleb(body.length), ...body]), // code
  ]);
}

// Just the part of the WebAssembly API used here (this package compiles without DOM or wasm type libraries).
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmInstance {
  readonly exports: Record<string, unknown>;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => WasmInstance;
}

type CutFn = (p: number, n: number, min: number, avg: number, max: number, a: number, b: number, c: number, d: number) => number;

/** Slice of input copied into WebAssembly memory at a time (at least 2 × maxSize). */
const SLICE = 4 * 1024 * 1024;

export class WasmCdc {
  private readonly memory: WasmMemory;
  private readonly cut: CutFn;
  private view: Uint8Array;

  private constructor(instance: WasmInstance) {
    this.memory = instance.exports.mem as WasmMemory;
    this.cut = instance.exports.cut as CutFn;
    const dv = new DataView(this.memory.buffer);
    gearTable().forEach((g, i) => dv.setBigUint64(i * 8, g, true));
    this.view = new Uint8Array(this.memory.buffer);
  }

  /** Null when WebAssembly is unavailable (e.g. node --jitless). */
  static create(): WasmCdc | null {
    const api = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;
    if (!api) return null;
    try {
      return new WasmCdc(new api.Instance(new api.Module(moduleBytes())));
    } catch {
      return null;
    }
  }

  private reserve(bytes: number): void {
    const need = DATA + bytes;
    const have = this.memory.buffer.byteLength;
    if (need > have) {
      this.memory.grow(Math.ceil((need - have) / PAGE));
      this.view = new Uint8Array(this.memory.buffer);
    }
  }

  /** Same contract as `finalCutsJs` in ./fastcdc.ts. */
  finalCuts(src: Uint8Array, filled: number, eof: boolean, c: Cutter, lens: number[]): number {
    lens.length = 0;
    const slice = Math.max(SLICE, 2 * c.maxSize);
    this.reserve(Math.min(slice, filled));
    const view = this.view;
    const cut = this.cut;
    let start = 0;
    while (start < filled) {
      const len = Math.min(slice, filled - start);
      const toEnd = start + len === filled;
      // A cut with fewer than maxSize bytes ahead is only final at the real end of the input.
      const open = !(toEnd && eof);
      view.set(src.subarray(start, start + len), DATA);
      let s = 0;
      while (s < len) {
        const rest = len - s;
        if (open && rest < c.maxSize) break;
        const n = cut(DATA + s, rest, c.minSize, c.avgSize, c.maxSize, c.s32Lo, c.s32Hi, c.l32Lo, c.l32Hi);
        lens.push(n);
        s += n;
      }
      start += s;
      if (toEnd) break;
    }
    return start;
  }
}
