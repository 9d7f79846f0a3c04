// loadNative / getChunker, recipe packing and parameter checks.

import { writeFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  DEFAULT_PARAMS,
  chunkCount,
  createFallbackChunker,
  createNativeChunker,
  getChunker,
  loadNative,
  nativeLoadErrors,
  packChunks,
  unpackChunks,
  validateParams,
} from '../src/index.js';
import { NATIVE_DISABLED, Rng, nativeForTests } from './helpers.js';

const native = nativeForTests();

afterEach(() => {
  vi.unstubAllEnvs();
});

/** The addon's .node file, found next to the @skysync/native loader. */
function addonFile(): string {
  const pkgDir = dirname(createRequire(import.meta.url).resolve('@skysync/native'));
  const file = readdirSync(pkgDir).find((f) => f.endsWith('.node'));
  if (!file) throw new Error(`no .node file in ${pkgDir}`);
  return join(pkgDir, file);
}

describe('loadNative', () => {
  it('returns null when SKYSYNC_NO_NATIVE=1', async () => {
    vi.stubEnv('SKYSYNC_NO_NATIVE', '1');
    expect(loadNative()).toBeNull();
    expect(nativeLoadErrors().join()).toMatch(/SKYSYNC_NO_NATIVE/);
    expect((await getChunker()).kind).toBe('fallback');
  });

  it('skips candidates that do not load, records why, and never throws', () => {
    vi.stubEnv('SKYSYNC_NO_NATIVE', '');
    vi.stubEnv('SKYSYNC_NATIVE_PATH', '/nonexistent/skysync.node');
    const dir = mkdtempSync(join(tmpdir(), 'skysync-load-'));
    try {
      const notAddon = join(dir, 'not-addon.cjs');
      writeFileSync(notAddon, 'module.exports = { hello: 1 };');
      const got = loadNative([join(dir, 'missing.node'), notAddon]);
      // The @skysync/native package is still tried last.
      if (native) expect(got).not.toBeNull();
      else expect(got === null || typeof got.chunkBuffer === 'function').toBe(true);
      const errors = nativeLoadErrors().join('\n');
      expect(errors).toContain('/nonexistent/skysync.node');
      expect(errors).toContain('missing.node');
      expect(errors).toContain('not the skysync addon');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe.skipIf(native === null && NATIVE_DISABLED)('with the addon built', () => {
    it('loads a .node file from SKYSYNC_NATIVE_PATH or a candidate path', () => {
      const file = addonFile();
      vi.stubEnv('SKYSYNC_NATIVE_PATH', file);
      const a = loadNative();
      expect(typeof a?.chunkBuffer).toBe('function');
      vi.stubEnv('SKYSYNC_NATIVE_PATH', '');
      const b = loadNative(['/nonexistent.node', file]);
      expect(typeof b?.cutPoints).toBe('function');
      expect(nativeLoadErrors()).toHaveLength(1);
    });

    it('getChunker prefers native and honours an explicit choice', async () => {
      expect((await getChunker()).kind).toBe('native');
      expect((await getChunker({ native: null })).kind).toBe('fallback');
      expect((await getChunker({ native: native! })).kind).toBe('native');
    });

    it('blake3 and recipeDigest agree with the fallback', async () => {
      const fb = await createFallbackChunker();
      const nat = createNativeChunker(native!);
      const rng = new Rng(99);
      for (const len of [0, 1, 63, 64, 1023, 1024, 1025, 16384, 16385, 100_000]) {
        const data = Buffer.alloc(len);
        rng.fill(data);
        expect(fb.blake3(data).toString('hex')).toBe(nat.blake3(data).toString('hex'));
        // A Uint8Array that is a view into a larger buffer, not a Buffer.
        const view = new Uint8Array(data.buffer, data.byteOffset, data.length);
        expect(nat.blake3(view).equals(fb.blake3(view))).toBe(true);
        const r = fb.chunkBuffer(view, { minSize: 64, avgSize: 256, maxSize: 1024 });
        expect(nat.recipeDigest(r.chunks).equals(r.digest)).toBe(true);
        expect(nat.chunkBuffer(view, { minSize: 64, avgSize: 256, maxSize: 1024 }).chunks.equals(r.chunks)).toBe(true);
      }
      expect(() => nat.recipeDigest(Buffer.alloc(35))).toThrow();
      expect(() => fb.recipeDigest(Buffer.alloc(35))).toThrow(RangeError);
    });
  });
});

describe('recipes', () => {
  it('packs and unpacks chunk lists', () => {
    const list = [
      { id: Buffer.alloc(32, 1), len: 5 },
      { id: Buffer.alloc(32, 2), len: 0xffffffff },
      { id: Buffer.alloc(32, 3), len: 0 },
    ];
    const packed = packChunks(list);
    expect(packed.length).toBe(108);
    expect(packed.readUInt32LE(32)).toBe(5);
    expect(unpackChunks(packed)).toEqual(list);
    expect(chunkCount({ chunks: packed })).toBe(3);
    expect(packChunks([]).length).toBe(0);
    // Ids are copies.
    const [first] = unpackChunks(packed);
    first!.id[0] = 9;
    expect(packed[0]).toBe(1);
  });

  it('rejects malformed input', () => {
    expect(() => unpackChunks(Buffer.alloc(37))).toThrow(RangeError);
    expect(() => chunkCount({ chunks: Buffer.alloc(1) })).toThrow(RangeError);
    expect(() => packChunks([{ id: Buffer.alloc(31), len: 1 }])).toThrow(RangeError);
    expect(() => packChunks([{ id: Buffer.alloc(32), len: -1 }])).toThrow(RangeError);
    expect(() => packChunks([{ id: Buffer.alloc(32), len: 2 ** 32 }])).toThrow(RangeError);
  });

  it('a recipe lists chunks that add up to the input', async () => {
    const fb = await createFallbackChunker();
    const data = Buffer.alloc(1_000_000);
    new Rng(5).fill(data);
    const r = fb.chunkBuffer(data);
    const chunks = unpackChunks(r.chunks);
    expect(chunks.reduce((s, c) => s + c.len, 0)).toBe(data.length);
    expect(chunks.slice(0, -1).every((c) => c.len >= DEFAULT_PARAMS.minSize && c.len <= DEFAULT_PARAMS.maxSize)).toBe(true);
    expect(packChunks(chunks).equals(r.chunks)).toBe(true);
  });
});

describe('parameters', () => {
  const bad = [
    { minSize: 63, avgSize: 256, maxSize: 1024 },
    { minSize: 64, avgSize: 255, maxSize: 1024 },
    { minSize: 64, avgSize: 256, maxSize: 1023 },
    { minSize: 8192, avgSize: 4096, maxSize: 65536 },
    { minSize: 4096, avgSize: 65536, maxSize: 16384 },
    { minSize: 2 * 1024 * 1024, avgSize: 4 * 1024 * 1024, maxSize: 8 * 1024 * 1024 },
    { minSize: 4096, avgSize: 8 * 1024 * 1024, maxSize: 16 * 1024 * 1024 },
    { minSize: 4096, avgSize: 16384, maxSize: 32 * 1024 * 1024 },
    { minSize: 4096.5, avgSize: 16384, maxSize: 65536 },
    { minSize: Number.NaN, avgSize: 16384, maxSize: 65536 },
  ];

  it('rejects what the native core rejects, in both chunkers', async () => {
    const fb = await createFallbackChunker();
    for (const p of bad) {
      expect(() => validateParams(p), JSON.stringify(p)).toThrow(RangeError);
      expect(() => fb.chunkBuffer(Buffer.alloc(10), p)).toThrow(RangeError);
      if (native) {
        expect(() => createNativeChunker(native).chunkBuffer(Buffer.alloc(10), p)).toThrow(RangeError);
        if (Number.isInteger(p.minSize)) expect(() => native.chunkBuffer(Buffer.alloc(10), p)).toThrow();
      }
    }
  });

  it('accepts the extremes', async () => {
    const fb = await createFallbackChunker();
    const data = Buffer.alloc(50_000);
    new Rng(8).fill(data);
    for (const p of [
      { minSize: 64, avgSize: 256, maxSize: 1024 },
      { minSize: 1024 * 1024, avgSize: 4 * 1024 * 1024, maxSize: 16 * 1024 * 1024 },
      { minSize: 256, avgSize: 256, maxSize: 1024 },
      { minSize: 1024, avgSize: 1024, maxSize: 1024 },
    ]) {
      const r = fb.chunkBuffer(data, p);
      if (native) expect(native.chunkBuffer(data, p).chunks.equals(r.chunks)).toBe(true);
    }
  });
});
