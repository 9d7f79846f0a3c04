// A one-byte insertion into a large object: only about one part is uploaded, the rest is copied inside the bucket.
// Counted from the server's side: moto's request log (UploadPart bodies vs UploadPartCopy ranges), and for GCS the
// pieces the bucket holds before and after.
import { describe, expect, it } from 'vitest';
import { freshStore, gcsStore, objectServers, randomBytes, readAll, s3Store, skipReason } from './helpers/servers.js';

const servers = objectServers();
const MiB = 1024 * 1024;

function insertion(old: Buffer, at: number, byte: string) {
  return {
    expected: Buffer.concat([old.subarray(0, at), Buffer.from(byte), old.subarray(at)]),
    parts: (etag: string) => [
      { kind: 'copy' as const, key: 'model.bin', start: 0, end: at, etag },
      { kind: 'bytes' as const, data: Buffer.from(byte) },
      { kind: 'copy' as const, key: 'model.bin', start: at, end: old.length, etag },
    ],
  };
}

describe.skipIf(skipReason)('a changed large object', () => {
  it('on S3: UploadPartCopy for the unchanged ranges, one small part of bytes (moto request log)', async () => {
    const bucket = `copy-${Date.now()}`;
    const store = s3Store(servers(), bucket);
    await store.createBucket();
    const old = randomBytes(40 * MiB);
    const first = await store.put('model.bin', [{ kind: 'bytes', data: old }]);
    const { expected, parts } = insertion(old, 17 * MiB + 5, 'x');

    await servers().s3.startRecording();
    const result = await store.put('model.bin', parts(first.info.etag), { condition: { ifMatch: first.info.etag } });
    const log = await servers().s3.recording();

    const uploads = log.filter((r) => r.method === 'PUT' && r.url.includes('partNumber=') && !r.headers['x-amz-copy-source']);
    const copies = log.filter((r) => r.method === 'PUT' && r.headers['x-amz-copy-source-range']);
    const sent = uploads.reduce((sum, r) => sum + Number(r.headers['x-amz-decoded-content-length'] ?? r.bodyBytes), 0);
    const copied = copies.reduce((sum, r) => {
      const [, start, end] = /bytes=(\d+)-(\d+)/.exec(r.headers['x-amz-copy-source-range']!)!;
      return sum + Number(end) - Number(start) + 1;
    }, 0);
    expect(log.filter((r) => r.method === 'PUT' && !r.url.includes('partNumber=') && r.bodyBytes > MiB)).toEqual([]);
    expect(sent).toBe(5 * MiB);
    expect(copied).toBe(expected.length - 5 * MiB);
    expect({ sent: result.bytesSent, copied: result.bytesCopied }).toEqual({ sent, copied });
    expect((await readAll(await store.read('model.bin'))).equals(expected)).toBe(true);

    // A copy from a version that is gone fails the write instead of mixing versions.
    await expect(store.put('model.bin', parts(first.info.etag))).rejects.toMatchObject({ kind: 'precondition' });
  });

  it('on GCS: compose of the unchanged pieces; only the changed piece is new (pieces listed on the server)', async () => {
    const store = await freshStore(servers(), 'gs');
    const old = randomBytes(40 * MiB);
    const first = await store.put('model.bin', [{ kind: 'bytes', data: old }]);
    const piecesBefore = [];
    for await (const info of store.list('.skysync/pieces/')) piecesBefore.push(info);
    expect(piecesBefore.length).toBe(5);

    const { expected, parts } = insertion(old, 17 * MiB + 5, 'x');
    const result = await store.put('model.bin', parts(first.info.etag), { condition: { ifMatch: first.info.etag } });
    const piecesAfter = [];
    for await (const info of store.list('.skysync/pieces/')) piecesAfter.push(info);
    const before = new Set(piecesBefore.map((info) => info.key));
    const added = piecesAfter.filter((info) => !before.has(info.key));
    const addedBytes = added.reduce((sum, info) => sum + info.size, 0);

    // The 8 MiB piece holding the insertion is the only one uploaded again; the replaced piece is deleted.
    expect(addedBytes).toBe(8 * MiB + 1);
    expect(piecesAfter.length).toBe(5);
    expect({ sent: result.bytesSent, copied: result.bytesCopied }).toEqual({ sent: addedBytes, copied: 32 * MiB });
    expect((await readAll(await store.read('model.bin'))).equals(expected)).toBe(true);
    const plain = gcsStore(servers(), store.uri.bucket);
    expect((await plain.head('model.bin'))?.size).toBe(expected.length);

    // A rename: the pieces are copied inside the bucket, nothing is sent; each object owns its pieces, so removing
    // one leaves the other whole, and removing both leaves no piece behind.
    const current = await store.head('model.bin');
    const renamed = await store.put('renamed.bin', [{ kind: 'copy', key: 'model.bin', start: 0, end: expected.length, etag: current!.etag }]);
    expect({ sent: renamed.bytesSent, copied: renamed.bytesCopied }).toEqual({ sent: 0, copied: expected.length });
    await store.remove(['model.bin']);
    expect((await readAll(await store.read('renamed.bin'))).equals(expected)).toBe(true);
    const again = await store.put('renamed.bin', [
      { kind: 'copy', key: 'renamed.bin', start: 0, end: 8 * MiB },
      { kind: 'bytes', data: Buffer.from('tail') },
    ]);
    expect(again.bytesCopied).toBe(8 * MiB);
    await store.remove(['renamed.bin']);
    const left = [];
    for await (const info of store.list('.skysync/')) left.push(info.key);
    expect(left).toEqual([]);
  });
});
