// The sending side's data pump on its own: literal bytes from files and buffers go out as DATA blocks of at most
// DATA_BLOCK raw bytes, compressed as one stream, then DATA_END; a file that shrank while it was read is an error,
// never a short block. Real connections over a stream pair, the real codecs.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { loadNative } from '@skysync/chunking';
import { type Compression, Connection, createBlockDecoder, DATA_BLOCK, Frame } from '@skysync/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng, seedFromEnv } from '../../../test/helpers/random.js';
import { DataPump } from '../src/index.js';

const native = loadNative();
let root: string;

beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-pump-'));
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function pair(): { sender: Connection; receiver: Connection } {
  const there = new PassThrough();
  const back = new PassThrough();
  return { sender: new Connection(back, there), receiver: new Connection(there, back) };
}

/** Everything the receiver gets until DATA_END: the decoded bytes and each block's raw size. */
async function drain(conn: Connection, codec: Compression): Promise<{ bytes: Buffer; blocks: number[] }> {
  const decoder = createBlockDecoder(codec, native);
  const parts: Buffer[] = [];
  const blocks: number[] = [];
  for (;;) {
    const f = await conn.next();
    if (!f) throw new Error('the connection ended before DATA_END');
    if (f.type === Frame.DataEnd) return { bytes: Buffer.concat(parts), blocks };
    expect(f.type).toBe(Frame.Data);
    const raw = decoder.decode(f.payload);
    parts.push(raw);
    blocks.push(raw.length);
  }
}

const codecs: Compression[] = native ? ['zstd', 'deflate', 'none'] : ['deflate', 'none'];

describe('data pump', () => {
  for (const codec of codecs) {
    it(`sends exactly the pieces it was given, in order, in blocks of at most DATA_BLOCK (${codec}, seeded)`, async () => {
      const seed = seedFromEnv();
      const rng = new Rng(seed);
      try {
        const files = ['a.bin', 'sub dir/b.bin'];
        fs.mkdirSync(path.join(root, 'sub dir'), { recursive: true });
        const contents = files.map((f) => {
          const data = Buffer.from(Array.from({ length: 3 * DATA_BLOCK + rng.int(DATA_BLOCK) }, () => rng.int(4)));
          fs.writeFileSync(path.join(root, f), data);
          return data;
        });
        const { sender, receiver } = pair();
        const pump = new DataPump(sender, codec, native, root);
        const expected: Buffer[] = [];
        const received = drain(receiver, codec);
        for (let step = 0; step < 40; step++) {
          if (rng.int(2) === 0) {
            const k = rng.int(files.length);
            const offset = rng.int(contents[k]!.length - 1);
            const len = 1 + rng.int(Math.min(contents[k]!.length - offset, 2 * DATA_BLOCK));
            await pump.addFromFile(Buffer.from(files[k]!, 'utf8').toString('latin1'), offset, len);
            expected.push(contents[k]!.subarray(offset, offset + len));
          } else {
            // A piece larger than a block splits into whole blocks.
            const piece = Buffer.alloc(1 + rng.int(2 * DATA_BLOCK), rng.int(256));
            await pump.add(piece);
            expected.push(piece);
          }
        }
        await pump.finish();
        const got = await received;
        const want = Buffer.concat(expected);
        expect(got.bytes.equals(want)).toBe(true);
        expect(pump.bytesLiteral).toBe(want.length);
        expect(Math.max(...got.blocks)).toBeLessThanOrEqual(DATA_BLOCK + 512 * 1024);
        // Only the last block may be short of DATA_BLOCK: the pump fills a block before it sends one.
        for (const size of got.blocks.slice(0, -1)) expect(size).toBeGreaterThanOrEqual(DATA_BLOCK);
      } catch (e) {
        throw new Error(`${(e as Error).message} (replay with SKYSYNC_SEED=${seed})`);
      }
    });
  }

  it('refuses a file that shrank while it was read, naming it', async () => {
    fs.writeFileSync(path.join(root, 'short.bin'), Buffer.alloc(1000, 7));
    const { sender } = pair();
    const pump = new DataPump(sender, 'none', native, root);
    await expect(pump.addFromFile('short.bin', 500, 1000)).rejects.toThrow(/file changed while it was read: short\.bin/);
    pump.closeFiles();
  });

  it('never follows a symlink in place of a file it was told to read', async () => {
    fs.writeFileSync(path.join(root, 'real.bin'), Buffer.alloc(10, 1));
    fs.symlinkSync(path.join(root, 'real.bin'), path.join(root, 'link.bin'));
    const { sender } = pair();
    const pump = new DataPump(sender, 'none', native, root);
    await expect(pump.addFromFile('link.bin', 0, 10)).rejects.toThrow(/ELOOP/);
  });
});
