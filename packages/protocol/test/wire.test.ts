import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  ByteReader,
  ByteWriter,
  Connection,
  Frame,
  FrameDecoder,
  MAGIC,
  MAX_FRAME,
  ProtocolError,
  checkRelativePath,
  createBlockDecoder,
  createBlockEncoder,
  decodeEntries,
  encodeEntries,
  encodeFrame,
  type PlanEntry,
} from '@skysync/protocol';
import { Rng, seedFromEnv } from '../../../test/helpers/random.js';

const entries: PlanEntry[] = [
  {
    kind: 'file',
    path: 'src/ümlaut.py'.replace('ü', '\u00fc'),
    mode: 0o644,
    size: 10,
    mtimeSec: -5,
    mtimeNsec: 999_999_999,
    digest: Buffer.alloc(32, 7),
    ops: [
      { op: 'copy', from: null, start: 0, count: 3 },
      { op: 'copy', from: 'other/file', start: 9, count: 1 },
      { op: 'chunks', chunks: Buffer.concat([Buffer.alloc(32, 1), Buffer.from([10, 0, 0, 0])]) },
    ],
  },
  { kind: 'dir', path: 'src', mode: 0o755 },
  { kind: 'symlink', path: 'link', target: '../elsewhere' },
  { kind: 'delete', path: 'gone\u00ff\u0080', forgetOnly: true },
  { kind: 'keep', path: 'locked/secret.txt' },
];

describe('frames', () => {
  it('a send fails once the output has closed, also one already waiting for it to drain', async () => {
    // As an SSH channel whose connection died: it takes writes and never calls them back.
    const output = new Writable({ highWaterMark: 1024, write: () => {} });
    const conn = new Connection(new PassThrough(), output);
    const waiting = conn.send(Frame.Data, Buffer.alloc(9 << 20));
    output.emit('close');
    await expect(waiting).rejects.toThrow(/connection closed while sending data/);
    await expect(conn.send(Frame.Data, Buffer.alloc(1))).rejects.toThrow(/connection closed while sending data/);
  });

  it('skip what a login shell prints before the magic', () => {
    const d = new FrameDecoder();
    const wire = Buffer.concat([Buffer.from('Welcome to Ubuntu\nlast login: today\n'), MAGIC, encodeFrame(Frame.Hello, Buffer.from('{}'))]);
    const frames = [];
    // Byte by byte: the magic and the frame may be split anywhere.
    for (const b of wire) frames.push(...d.push(Buffer.from([b])));
    expect(frames).toHaveLength(1);
    expect(frames[0]!.type).toBe(Frame.Hello);
    expect(d.preamble).toContain('Welcome to Ubuntu');
  });

  it('refuse a length of zero or past the limit before allocating', () => {
    for (const len of [0, MAX_FRAME + 1, 0xffffffff]) {
      const d = new FrameDecoder();
      const head = Buffer.alloc(5);
      head.writeUInt32LE(len >>> 0, 0);
      expect(() => d.push(Buffer.concat([MAGIC, head]))).toThrow(ProtocolError);
    }
  });

  it('give up when no agent ever answers', () => {
    const d = new FrameDecoder();
    expect(() => {
      for (let i = 0; i < 20; i++) d.push(Buffer.alloc(64 * 1024, 0x41));
    }).toThrow(/no skysync agent answered/);
  });

  it('carry frames both ways with backpressure', async () => {
    const a2b = new PassThrough({ highWaterMark: 1024 });
    const b2a = new PassThrough({ highWaterMark: 1024 });
    const a = new Connection(b2a, a2b);
    const b = new Connection(a2b, b2a);
    const big = Buffer.alloc(3 * 1024 * 1024, 9);
    const sending = (async () => {
      for (let i = 0; i < 5; i++) await a.send(Frame.Data, big);
      a.end();
    })();
    let total = 0;
    for (;;) {
      const f = await b.next();
      if (!f) break;
      total += f.payload.length;
    }
    await sending;
    expect(total).toBe(5 * big.length);
  });
});

describe('entries', () => {
  it('round-trip every kind, with byte-exact paths', () => {
    expect(decodeEntries(encodeEntries(entries))).toEqual(entries);
  });

  it('refuse unsafe paths', () => {
    for (const p of ['', '/etc/passwd', '../x', 'a/../b', 'a//b', 'a/./b', 'a\0b', 'a/']) {
      expect(() => checkRelativePath(p), p).toThrow(ProtocolError);
      const bad = encodeEntries([{ kind: 'dir', path: 'ok', mode: 0o755 }]);
      const w = new ByteWriter();
      w.varint(1).u8(2).path(p).varint(0o755);
      expect(() => decodeEntries(w.finish()), p).toThrow(ProtocolError);
      expect(decodeEntries(bad)).toHaveLength(1);
    }
  });

  it('never crash on random or truncated input (seeded fuzz)', () => {
    const seed = seedFromEnv();
    const rng = new Rng(seed);
    const good = encodeEntries(entries);
    try {
      for (let i = 0; i < 5000; i++) {
        let input: Buffer;
        const r = rng.int(3);
        if (r === 0) input = rng.bytes(rng.int(200));
        else if (r === 1) input = good.subarray(0, rng.int(good.length));
        else {
          input = Buffer.from(good);
          for (let k = 0; k < 1 + rng.int(4); k++) input[rng.int(input.length)] = rng.int(256);
        }
        try {
          decodeEntries(input);
        } catch (e) {
          expect(e).toBeInstanceOf(ProtocolError);
        }
      }
    } catch (e) {
      console.error(`entry fuzz failed with SKYSYNC_SEED=${seed}`);
      throw e;
    }
  });

  it('varints cover the safe integers, zigzag half of them, and refuse the rest', () => {
    const w = new ByteWriter(4);
    const values = [0, 1, 127, 128, 2 ** 31, 2 ** 32 + 5, 2 ** 52 - 1];
    for (const v of values) w.varint(v).zigzag(-v).zigzag(v);
    w.varint(Number.MAX_SAFE_INTEGER);
    const r = new ByteReader(w.finish());
    for (const v of values) {
      expect(r.varint()).toBe(v);
      expect(r.zigzag()).toBe(-v || 0);
      expect(r.zigzag()).toBe(v);
    }
    expect(r.varint()).toBe(Number.MAX_SAFE_INTEGER);
    r.end();
    expect(() => new ByteWriter().varint(-1)).toThrow(ProtocolError);
    expect(() => new ByteWriter().varint(2 ** 60)).toThrow(ProtocolError);
  });
});

describe('block codecs', () => {
  it('deflate round-trips and refuses a bomb', () => {
    const enc = createBlockEncoder('deflate', null);
    const dec = createBlockDecoder('deflate', null);
    const text = Buffer.from('hello world\n'.repeat(50_000));
    expect(dec.decode(enc.encode(text.subarray(0, 1 << 20)))).toEqual(text.subarray(0, 1 << 20));
    const bomb = enc.encode(Buffer.alloc(1 << 20)); // fine: 1 MiB
    expect(dec.decode(bomb).length).toBe(1 << 20);
    const bigger = createBlockEncoder('deflate', null).encode(Buffer.alloc(3 << 20));
    expect(() => dec.decode(bigger)).toThrow(ProtocolError);
    expect(() => dec.decode(Buffer.from([0xff, 0xff, 0xff]))).toThrow(ProtocolError);
  });
});
