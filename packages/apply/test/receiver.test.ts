import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ProtocolError, type PlanEntry } from '@skysync/protocol';
import { fileEntry, leftovers, listAll, receiverFor, sync, tempDir, withBytes } from './helpers.js';

const bytes = (n: number, seed = 1): Buffer => {
  const b = Buffer.alloc(n);
  let x = seed * 2654435761;
  for (let i = 0; i < n; i++) b[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  return b;
};

describe('transition', () => {
  it('removes deepest first, then makes directories, places files and symlinks, and sets directory modes last', async () => {
    const root = tempDir('tr');
    fs.mkdirSync(path.join(root, 'old/deep'), { recursive: true });
    fs.writeFileSync(path.join(root, 'old/deep/f'), 'x');
    fs.writeFileSync(path.join(root, 'was-file'), 'x');
    fs.mkdirSync(path.join(root, 'was-dir'));
    const entries: PlanEntry[] = [
      { kind: 'delete', path: 'old', forgetOnly: false },
      { kind: 'delete', path: 'old/deep', forgetOnly: false },
      { kind: 'delete', path: 'old/deep/f', forgetOnly: false },
      { kind: 'dir', path: 'ro', mode: 0o555 },
      withBytes('ro/inside', bytes(100)),
      { kind: 'dir', path: 'was-file', mode: 0o755 },
      withBytes('was-dir', bytes(10, 2)),
      { kind: 'symlink', path: 'ro/link', target: '../was-dir' },
    ];
    const r = await sync(root, entries);
    expect(r.failed).toEqual([]);
    expect(r.removed.sort()).toEqual(['old', 'old/deep', 'old/deep/f']);
    expect(listAll(root)).toEqual(['ro', 'ro/inside', 'ro/link', 'was-dir', 'was-file']);
    expect(fs.statSync(path.join(root, 'ro')).mode & 0o777).toBe(0o555);
    expect(fs.readlinkSync(path.join(root, 'ro/link'))).toBe('../was-dir');
    expect(fs.readFileSync(path.join(root, 'was-dir')).equals(bytes(10, 2))).toBe(true);
    fs.chmodSync(path.join(root, 'ro'), 0o755);
  });

  it('keeps a directory that holds files it did not place, and never deletes what is not its own', async () => {
    const root = tempDir('tr');
    fs.mkdirSync(path.join(root, 'd'));
    fs.writeFileSync(path.join(root, 'd/job-output'), 'x');
    fs.writeFileSync(path.join(root, 'theirs'), 'x');
    const r = await sync(
      root,
      [
        { kind: 'delete', path: 'd', forgetOnly: false },
        { kind: 'delete', path: 'theirs', forgetOnly: false },
      ],
      {
        over: { isPlaced: (p) => p === 'd' },
      },
    );
    expect(r.kept).toEqual(['d']);
    expect(r.forgotten).toEqual(['theirs']);
    expect(listAll(root)).toEqual(['d', 'd/job-output', 'theirs']);
  });

  it('refuses to remove or write below a symlink', async () => {
    const root = tempDir('tr');
    const outside = tempDir('outside');
    fs.writeFileSync(path.join(outside, 'f'), 'keep');
    fs.symlinkSync(outside, path.join(root, 'l'));
    const r = await sync(root, [{ kind: 'delete', path: 'l/f', forgetOnly: false }, withBytes('l/new', bytes(5))]);
    expect(r.failed.map((f) => f.path).sort()).toEqual(['l/f', 'l/new']);
    expect(fs.readdirSync(outside)).toEqual(['f']);
    expect(leftovers(root)).toEqual([]);
  });
});

describe('stagers', () => {
  for (const withNative of [true, false]) {
    it(`a file whose chunk does not match fails alone, its temp file removed (${withNative ? 'batch writer' : 'one by one'})`, async () => {
      const root = tempDir('st');
      const good = withBytes('a/good', bytes(300));
      const bad = withBytes('a/bad', bytes(300, 3));
      const data = Buffer.concat([good.bytes, bytes(300, 4)]);
      const r = await sync(root, [good, bad], { data, over: withNative ? {} : { native: null } });
      expect(r.failed.map((f) => f.path)).toEqual(['a/bad']);
      expect(listAll(root)).toEqual(['a', 'a/good']);
    });
  }

  it('stages a file whose directory is a file still, then places it once the plan replaced that file', async () => {
    const root = tempDir('st');
    fs.writeFileSync(path.join(root, 'd'), 'a file where a directory goes');
    const f = withBytes('d/f', bytes(1000));
    const r = await sync(root, [{ kind: 'delete', path: 'd', forgetOnly: false }, { kind: 'dir', path: 'd', mode: 0o755 }, f]);
    expect(r.failed).toEqual([]);
    expect(listAll(root)).toEqual(['d', 'd/f']);
  });

  it('builds a large file from held chunks and the stream, and fails it when a held source changed', async () => {
    const root = tempDir('st');
    const old = bytes(3 << 20, 5);
    fs.writeFileSync(path.join(root, 'big'), old);
    const e = fileEntry('big', Buffer.concat([old, bytes(1000, 6)]));
    const held = fileEntry('big', old);
    const r = receiverFor(root, {
      held: { recipeOf: (p) => (p === 'big' ? (held.ops[0]!.op === 'chunks' ? (held.ops[0] as { chunks: Buffer }).chunks : null) : null), locate: (ids) => ids.map(() => null) },
    });
    const n = (held.ops[0] as { chunks: Buffer }).chunks.length / 36;
    const tail = (e.ops[0] as { chunks: Buffer }).chunks;
    // Copy what the old file has, take the rest from the stream.
    const oldChunks = (held.ops[0] as { chunks: Buffer }).chunks;
    let same = 0;
    while (same < n - 1 && tail.subarray(same * 36, same * 36 + 36).equals(oldChunks.subarray(same * 36, same * 36 + 36))) same++;
    const rest = tail.subarray(same * 36);
    let restLen = 0;
    for (let o = 32; o < rest.length; o += 36) restLen += rest.readUInt32LE(o);
    e.ops = [
      { op: 'copy', from: null, start: 0, count: same },
      { op: 'chunks', chunks: rest },
    ];
    r.add([e], true);
    const all = Buffer.concat([old, bytes(1000, 6)]);
    r.stream.push(all.subarray(all.length - restLen));
    r.stream.end();
    const res = await r.transition();
    expect(res.failed).toEqual([]);
    expect(fs.readFileSync(path.join(root, 'big')).equals(all)).toBe(true);
    expect(leftovers(root)).toEqual([]);
  });

  // ISSUE22 defect 2: a wrong entry followed by a stream that ends before its bytes crashed the agent with an
  // unhandled rejection (Receiver.buildFile, LaneMerger.end).
  for (const wrong of ['digest', 'size', 'chunk length'] as const) {
    for (const big of [false, true]) {
      it(`a file entry with a wrong ${wrong} and a stream that ends early fails the sync, leaving no temp file (${big ? 'large' : 'small'})`, async () => {
        const root = tempDir('st');
        const first = withBytes('a/first', bytes(big ? 2 << 20 : 500, 7));
        const e = fileEntry('a/e', bytes(big ? 2 << 20 : 700, 8));
        const chunks = (e.ops[0] as { chunks: Buffer }).chunks;
        if (wrong === 'digest') e.digest = Buffer.alloc(32, 1);
        if (wrong === 'size') e.size += 10;
        if (wrong === 'chunk length') chunks.writeUInt32LE(chunks.readUInt32LE(32) + 4096, 32);
        const unhandled: unknown[] = [];
        const onUnhandled = (err: unknown): void => void unhandled.push(err);
        process.on('unhandledRejection', onUnhandled);
        try {
          const r = receiverFor(root);
          r.add([first, e], true);
          r.stream.push(first.bytes);
          r.stream.push(bytes(100, 9));
          r.stream.end();
          await expect(r.transition()).rejects.toThrow(ProtocolError);
          await new Promise((res) => setTimeout(res, 50));
        } finally {
          process.off('unhandledRejection', onUnhandled);
        }
        expect(unhandled).toEqual([]);
        expect(leftovers(root)).toEqual([]);
        expect(listAll(root).filter((p) => p !== 'a')).toEqual([]);
      });
    }
  }

  it('abort removes every temp file and the staging directory', async () => {
    const root = tempDir('st');
    fs.writeFileSync(path.join(root, 'd'), 'file where a directory goes');
    const r = receiverFor(root, { native: null });
    const a = withBytes('x/a', bytes(100));
    const b = withBytes('d/b', bytes(100, 2));
    const big = withBytes('x/big', bytes(1 << 20, 3));
    r.add([a, b, big], true);
    r.stream.push(Buffer.concat([a.bytes, b.bytes, big.bytes.subarray(0, 1000)]));
    await new Promise((res) => setTimeout(res, 50));
    expect(leftovers(root).length).toBeGreaterThan(0);
    await r.abort(new Error('client went away'));
    expect(leftovers(root)).toEqual([]);
  });
});
