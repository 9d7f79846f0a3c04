// The ObjectStore contract on both stores, against moto's S3 server and fake-gcs-server with the real SDKs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { StoreError } from '@skysync/store';
import { describe, expect, it } from 'vitest';
import { type Scheme, freshStore, objectServers, randomBytes, readAll, skipReason } from './helpers/servers.js';

const servers = objectServers();
const MiB = 1024 * 1024;

describe.skipIf(skipReason).each<Scheme>(['s3', 'gs'])('ObjectStore on %s', (scheme) => {
  it('lists more than one page (1100 keys) in key order, with size, version and mtime', async () => {
    const store = await freshStore(servers(), scheme);
    const keys = Array.from({ length: 1100 }, (_, i) => `data/${String(i).padStart(5, '0')}`);
    const started = Date.now() - 60_000;
    const queue = [...keys];
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let key = queue.shift(); key; key = queue.shift()) await store.put(key, [{ kind: 'bytes', data: Buffer.from(key) }]);
      }),
    );
    await store.put('other/x', [{ kind: 'bytes', data: Buffer.from('x') }]);
    await store.put('.skysync/state', [{ kind: 'bytes', data: Buffer.from('reserved') }]);

    const listed = [];
    for await (const info of store.list('data/')) listed.push(info);
    expect(listed.map((info) => info.key)).toEqual(keys);
    expect(listed.every((info) => info.size === 10 && info.etag !== '' && info.mtimeMs > started)).toBe(true);

    const after = [];
    for await (const info of store.list('data/', { after: keys[1049], pageSize: 20 })) after.push(info.key);
    expect(after).toEqual(keys.slice(1050));

    const all = [];
    for await (const info of store.list('')) all.push(info.key);
    expect(all).toHaveLength(1101);
    expect(all).not.toContain('.skysync/state');
  });

  it('reads ranges, within and across part boundaries, as bytes and as a stream', async () => {
    const store = await freshStore(servers(), scheme);
    const data = randomBytes(20 * MiB);
    const put = await store.put('big', [{ kind: 'bytes', data }]);
    expect(put.info.size).toBe(data.length);
    const head = await store.head('big');
    expect(head).toMatchObject({ key: 'big', size: data.length, etag: put.info.etag });

    for (const [start, end] of [
      [0, 1],
      [5, 1000],
      [8 * MiB - 10, 8 * MiB + 10],
      [data.length - 3, data.length],
    ] as const) {
      expect(Buffer.from(await store.getRange('big', start, end)).equals(data.subarray(start, end))).toBe(true);
    }
    expect((await readAll(await store.read('big', { start: MiB, end: 3 * MiB }))).equals(data.subarray(MiB, 3 * MiB))).toBe(true);
    expect((await readAll(await store.read('big'))).equals(data)).toBe(true);
    expect(await store.head('missing')).toBeNull();
  });

  it('refuses conditional writes that lost a race with 412 (precondition)', async () => {
    const store = await freshStore(servers(), scheme);
    const first = await store.put('k', [{ kind: 'bytes', data: Buffer.from('one') }], { condition: { ifAbsent: true } });
    await expect(store.put('k', [{ kind: 'bytes', data: Buffer.from('two') }], { condition: { ifAbsent: true } })).rejects.toMatchObject({ kind: 'precondition' });

    // Two writers both saw `first`; the second to write loses.
    const second = await store.put('k', [{ kind: 'bytes', data: Buffer.from('B') }], { condition: { ifMatch: first.info.etag } });
    const lost = store.put('k', [{ kind: 'bytes', data: Buffer.from('A') }], { condition: { ifMatch: first.info.etag } });
    await expect(lost).rejects.toThrow(StoreError);
    await expect(lost).rejects.toMatchObject({ kind: 'precondition' });
    await expect(lost).rejects.toThrow(`${scheme}://${store.uri.bucket}/k: changed by another writer`);
    expect(Buffer.from(await store.getRange('k', 0, 1)).toString()).toBe('B');
    expect((await store.head('k'))?.etag).toBe(second.info.etag);

    // Concurrent creates: exactly one wins.
    const racers = await Promise.allSettled(
      Array.from({ length: 4 }, (_, i) => store.put('race', [{ kind: 'bytes', data: Buffer.from(`racer ${i}`) }], { condition: { ifAbsent: true } })),
    );
    expect(racers.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of racers) if (r.status === 'rejected') expect(r.reason).toMatchObject({ kind: 'precondition' });
  });

  it('writes an object from new bytes and copied ranges of a stored one, and removes many', async () => {
    const store = await freshStore(servers(), scheme);
    const old = randomBytes(24 * MiB);
    const first = await store.put('model.bin', [{ kind: 'bytes', data: old }]);
    const at = 10 * MiB + 123;
    const inserted = Buffer.from('!');
    const result = await store.put(
      'model.bin',
      [
        { kind: 'copy', key: 'model.bin', start: 0, end: at, etag: first.info.etag },
        { kind: 'bytes', data: inserted },
        { kind: 'copy', key: 'model.bin', start: at, end: old.length, etag: first.info.etag },
      ],
      { condition: { ifMatch: first.info.etag } },
    );
    const expected = Buffer.concat([old.subarray(0, at), inserted, old.subarray(at)]);
    expect(result.info.size).toBe(expected.length);
    expect((await readAll(await store.read('model.bin'))).equals(expected)).toBe(true);
    expect(result.bytesSent).toBeLessThanOrEqual(10 * MiB);
    expect(result.bytesCopied).toBeGreaterThanOrEqual(14 * MiB);
    expect(result.bytesSent + result.bytesCopied).toBe(expected.length);

    // Ranges of a local file are read only when their part is sent.
    const local = path.join(os.tmpdir(), `skysync-store-${process.pid}-${scheme}`);
    fs.writeFileSync(local, '0123456789');
    try {
      const fromFile = await store.put('from-file', [
        { kind: 'file', path: local, start: 2, end: 6 },
        { kind: 'copy', key: 'model.bin', start: 0, end: 3 },
      ]);
      expect(fromFile.info.size).toBe(7);
      expect(Buffer.from(await store.getRange('from-file', 0, 7)).equals(Buffer.concat([Buffer.from('2345'), expected.subarray(0, 3)]))).toBe(true);
    } finally {
      fs.rmSync(local, { force: true });
    }

    const many = Array.from({ length: 30 }, (_, i) => `rm/${i}`);
    for (const key of many) await store.put(key, [{ kind: 'bytes', data: Buffer.from(key) }]);
    await store.remove([...many, 'rm/never-was']);
    const left = [];
    for await (const info of store.list('rm/')) left.push(info.key);
    expect(left).toEqual([]);
  });

  it('says "exists" when creating a bucket it already has', async () => {
    const store = await freshStore(servers(), scheme);
    await expect(store.createBucket()).resolves.toBe('exists');
    await expect(store.checkBucket()).resolves.toBeUndefined();
  });
});
