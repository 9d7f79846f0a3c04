// Rebuilding a changed large file from the copy held here: runs of held chunks go through the addon (kernel copy,
// verified in the temp file) or through JavaScript buffers without it; both give exactly the new bytes, and a
// held chunk changed on disk behind the receiver's back is caught and does not stop the next push.

import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { FileEntry } from '@skysync/protocol';
import { chunker, leftovers, receiverFor, tempDir } from './helpers.js';

const REF = 36;

/** xorshift32: the same cases from the same seed. */
function rng(seed: number): { below(n: number): number; bytes(n: number): Buffer } {
  let x = seed >>> 0 || 1;
  const next = (): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>>= 0);
  };
  return {
    below: (n) => next() % Math.max(1, n),
    bytes: (n) => {
      const b = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) b[i] = next() & 0xff;
      return b;
    },
  };
}

function edited(r: ReturnType<typeof rng>, old: Buffer): Buffer {
  let cur = old;
  for (let k = 1 + r.below(4); k > 0; k--) {
    const at = r.below(cur.length + 1);
    const end = Math.min(cur.length, at + 1 + r.below(200_000));
    switch (r.below(3)) {
      case 0:
        cur = Buffer.concat([cur.subarray(0, at), r.bytes(1 + r.below(30_000)), cur.subarray(at)]);
        break;
      case 1:
        cur = Buffer.concat([cur.subarray(0, at), cur.subarray(end)]);
        break;
      default: {
        const rest = Buffer.concat([cur.subarray(0, at), cur.subarray(end)]);
        const to = r.below(rest.length + 1);
        cur = Buffer.concat([rest.subarray(0, to), cur.subarray(at, end), rest.subarray(to)]);
      }
    }
  }
  return cur;
}

/**
 * The entry a sender would plan for `next` against the receiver's own `old` copy: runs of chunks found in order
 * in the old recipe are copies, the rest comes on the stream (returned as `literal`).
 */
function plan(p: string, old: Buffer, next: Buffer): { entry: FileEntry; held: Buffer; literal: Buffer } {
  const held = chunker.chunkBuffer(old).chunks;
  const r = chunker.chunkBuffer(next);
  const index = new Map<string, number>();
  for (let k = held.length / REF - 1; k >= 0; k--) index.set(held.subarray(k * REF, k * REF + REF).toString('latin1'), k);
  const ops: FileEntry['ops'] = [];
  const literal: Buffer[] = [];
  const refAt = (k: number): Buffer => r.chunks.subarray(k * REF, k * REF + REF);
  let off = 0;
  for (let i = 0; i < r.chunks.length / REF; ) {
    const start = index.get(refAt(i).toString('latin1'));
    let n = 1;
    if (start !== undefined) {
      while (i + n < r.chunks.length / REF && refAt(i + n).equals(held.subarray((start + n) * REF, (start + n) * REF + REF))) n++;
      ops.push({ op: 'copy', from: null, start, count: n });
    } else {
      ops.push({ op: 'chunks', chunks: refAt(i) });
    }
    for (let k = i; k < i + n; k++) {
      const len = refAt(k).readUInt32LE(32);
      if (start === undefined) literal.push(next.subarray(off, off + len));
      off += len;
    }
    i += n;
  }
  const entry: FileEntry = { kind: 'file', path: p, mode: 0o644, size: next.length, mtimeSec: 1_700_000_000, mtimeNsec: 0, digest: r.digest, ops };
  return { entry, held, literal: Buffer.concat(literal) };
}

async function rebuild(root: string, old: Buffer, next: Buffer, withNative: boolean, untrusted = new Set<string>()) {
  const { entry, held, literal } = plan('big', old, next);
  const r = receiverFor(root, {
    held: { recipeOf: (p) => (p === 'big' ? held : null), locate: (ids) => ids.map(() => null) },
    untrusted,
    ...(withNative ? {} : { native: null }),
  });
  r.add([entry], true);
  if (literal.length) r.stream.push(literal);
  r.stream.end();
  return r.transition();
}

describe('rebuilding a changed large file', () => {
  const seed = Number(process.env.SEED ?? 20261207);
  it(`random edits of a held file rebuild exactly the new bytes, with and without the addon (seed ${seed})`, async () => {
    const r = rng(seed);
    for (let c = 0; c < 10; c++) {
      const root = tempDir('rebuild');
      const old = r.bytes(c % 3 === 0 ? 10 << 20 : (1 << 20) + r.below(3 << 20));
      const next = edited(r, old);
      fs.writeFileSync(path.join(root, 'big'), old);
      const res = await rebuild(root, old, next, c % 2 === 0);
      expect(res.failed, `seed ${seed} case ${c}`).toEqual([]);
      expect(fs.readFileSync(path.join(root, 'big')).equals(next), `seed ${seed} case ${c}`).toBe(true);
      expect(leftovers(root)).toEqual([]);
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  for (const withNative of [true, false]) {
    it(`a byte flipped in the held file after placing fails the file, distrusts the old copy, and a re-send converges (${withNative ? 'kernel copy' : 'through buffers'})`, async () => {
      const r = rng(7);
      const root = tempDir('rebuild-bad');
      const old = r.bytes(12 << 20);
      const next = Buffer.concat([old.subarray(0, 6 << 20), Buffer.from('x'), old.subarray(6 << 20)]);
      const file = path.join(root, 'big');
      fs.writeFileSync(file, old);
      const before = fs.statSync(file);
      const flipped = Buffer.from(old);
      flipped[(9 << 20) + 3]! ^= 0x10;
      fs.writeFileSync(file, flipped);
      fs.utimesSync(file, before.atime, before.mtime);
      const untrusted = new Set<string>();
      const res = await rebuild(root, old, next, withNative, untrusted);
      expect(res.failed.map((f) => f.path)).toEqual(['big']);
      expect(res.failed[0]!.error).toMatch(/does not match its id/);
      expect(fs.readFileSync(file).equals(flipped)).toBe(true);
      expect(leftovers(root)).toEqual([]);
      // The agent forgets a failed path it no longer trusts: the next plan sends the file whole.
      expect([...untrusted]).toEqual(['big']);
      const again = await rebuild(root, Buffer.alloc(0), next, withNative);
      expect(again.failed).toEqual([]);
      expect(fs.readFileSync(file).equals(next)).toBe(true);
    });
  }
});
