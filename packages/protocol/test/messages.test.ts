// Every JSON message is checked against its declared shape when decoded: a malformed one is refused with the
// message and the field named, never with a JavaScript internal ("x.startsWith is not a function").

import { describe, expect, it } from 'vitest';
import {
  Begin,
  ByteWriter,
  Done,
  Hello,
  LanesSwitch,
  PROTOCOL_VERSION,
  Plan,
  ProtocolError,
  PushState,
  RelayHello,
  checkHello,
  decodeEntries,
  decodeIds,
  encodeEntries,
  makeHello,
  remoteError,
} from '@skysync/protocol';

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
const params = { minSize: 4096, avgSize: 16384, maxSize: 65536 };

describe('JSON messages', () => {
  it('pass through when they fit, extra fields ignored', () => {
    const begin = Begin.decode(json({ op: 'push', dest: '~/w', base: null, chunkParams: params, lanes: true, future: 1 }));
    expect(begin).toMatchObject({ op: 'push', dest: '~/w', lanes: true });
    expect(Begin.decode(json({ op: 'pull', path: 'x', chunkParams: params })).op).toBe('pull');
    const state = PushState.decode(json({ generation: 'g', drift: ['a'], dest: '/d', relay: { error: 'off' }, lanes: { socket: '/s', token: 't' } }));
    expect(state.lanes).toEqual({ socket: '/s', token: 't' });
  });

  it('name the message and the field that does not fit', () => {
    const cases: Array<[() => unknown, string]> = [
      [() => Begin.decode(json({ op: 'push', dest: 5, base: null, chunkParams: params })), 'bad begin message: field `dest` must be a string'],
      [() => Begin.decode(json({ op: 'rm', dest: '/' })), 'bad begin message: field `op` must be "push", "pull" or "bucket"'],
      [
        () => Begin.decode(json({ op: 'pull', path: 'x', chunkParams: { ...params, maxSize: '1' } })),
        'bad begin message: field `chunkParams.maxSize` must be a whole number from 0',
      ],
      [() => Begin.decode(json([1])), 'bad begin message: must be an object'],
      [() => Begin.decode(Buffer.from('{"op":')), 'bad begin message: not JSON'],
      [
        () => Plan.decode(json({ mode: 'data', compression: 'lz5', deleteMode: 'none', dryRun: false })),
        'bad plan message: field `compression` must be "zstd", "deflate" or "none"',
      ],
      [
        () => Plan.decode(json({ mode: 'need', compression: 'none', deleteMode: 'none', dryRun: false, relay: { addresses: ['a', 7], port: 1, token: 't' } })),
        'bad plan message: field `relay.addresses[1]` must be a string',
      ],
      [() => Done.decode(json({ generation: null, written: 1, deleted: 0, kept: 'a', failed: [] })), 'bad done message: field `kept` must be a list of strings'],
      [() => Done.decode(json({ generation: null, written: 1, deleted: 0, kept: [], failed: [{ path: 'a' }] })), 'bad done message: field `failed[0].error` must be a string'],
      [() => PushState.decode(json({ generation: null, drift: [], dest: '/d', lanes: { socket: 1 } })), 'bad state message: field `lanes` must be a lane offer or an error'],
      [() => LanesSwitch.decode(json({ lanes: [1, -2] })), 'bad lanes message: field `lanes[1]` must be a whole number from 0'],
      [() => LanesSwitch.decode(json({ lanes: 1 })), 'bad lanes message: field `lanes` must be a list of whole numbers from 0'],
      [() => Begin.decode(json({ op: 'push', dest: '/', base: 7, chunkParams: params })), 'bad begin message: field `base` must be a string or null'],
      [
        () => Hello.decode(json({ ...makeHello({ role: 'agent', software: 'x', compression: ['none'], native: false }), compression: 'none' })),
        'bad hello message: field `compression` must be a list of strings',
      ],
    ];
    for (const [decode, message] of cases) {
      expect(decode).toThrow(ProtocolError);
      expect(decode).toThrow(message);
    }
  });

  it('drop compressions a newer peer offers that this side does not know', () => {
    expect(RelayHello.decode(json({ compression: ['lz9', 'zstd'] })).compression).toEqual(['zstd']);
  });

  it('treat a key inherited from Object.prototype as absent', () => {
    expect(() => Done.decode(Buffer.from('{"generation":null,"written":0,"deleted":0,"failed":[]}'))).toThrow('field `kept` must be a list of strings');
    expect(() => LanesSwitch.decode(Buffer.from('{"__proto__":{"lanes":[1]}}'))).toThrow('field `lanes`');
  });

  it('turn an error frame that does not fit into a readable remote error', () => {
    expect(remoteError(json({ message: 'disk full', code: 'ENOSPC' })).message).toBe('disk full');
    expect(remoteError(json({ message: {} })).message).toMatch(/^remote error \(bad error message: field `message` must be a string\)$/);
  });
});

describe('hello', () => {
  const agent = makeHello({ role: 'agent', software: '0.1.0', compression: ['zstd', 'none'], native: true, capabilities: ['relay'] });

  it('is made and checked by one pair of functions', () => {
    expect(agent).toMatchObject({ protocol: PROTOCOL_VERSION, role: 'agent', platform: `${process.platform}-${process.arch}`, node: process.version });
    expect(checkHello(json(agent), 'agent', 'the agent on h')).toEqual(agent);
  });

  it('refuses another protocol version or the wrong role, naming the peer', () => {
    expect(() => checkHello(json({ ...agent, protocol: PROTOCOL_VERSION + 1 }), 'agent', 'the agent on h')).toThrow(
      `the agent on h speaks protocol ${PROTOCOL_VERSION + 1}, this client ${PROTOCOL_VERSION}`,
    );
    expect(() => checkHello(json(agent), 'client', 'the client')).toThrow('the client says it is a skysync agent, not the expected client');
    expect(() => checkHello(json({ ...agent, protocol: '1' }), 'agent', 'x')).toThrow('bad hello message: field `protocol` must be an integer');
  });
});

describe('plan entries', () => {
  const file = { kind: 'file' as const, path: 'a/b', mode: 0o644, size: 3, mtimeSec: 1, mtimeNsec: 0, digest: Buffer.alloc(32), ops: [] };

  it('refuse a truncated frame, naming the entry and its path', () => {
    const whole = encodeEntries([file, { ...file, path: 'c' }]);
    expect(() => decodeEntries(whole.subarray(0, whole.length - 3))).toThrow(/^bad entries message: entry 1 \("c"\): truncated message$/);
    expect(() => decodeEntries(Buffer.concat([whole, Buffer.from([0])]))).toThrow('bad entries message: its end: 1 unexpected trailing bytes');
  });

  it('refuse wrong kinds, flags, lengths and modes', () => {
    const w = (build: (w: ByteWriter) => void): Buffer => {
      const b = new ByteWriter();
      b.varint(1);
      build(b);
      return b.finish();
    };
    const chunk = (len: number): Buffer => {
      const c = Buffer.alloc(36);
      c.writeUInt32LE(len, 32);
      return c;
    };
    const fileWith = (ops: (w: ByteWriter) => void) =>
      w((b) => {
        b.u8(1).path('f').varint(0o644).varint(1).zigzag(0).varint(0).bytes(Buffer.alloc(32));
        ops(b);
      });
    expect(() => decodeEntries(w((b) => b.u8(9).path('x')))).toThrow('bad entries message: entry 0 ("x"): unknown entry kind 9');
    expect(() => decodeEntries(w((b) => b.u8(4).path('x').u8(7)))).toThrow('forget-only flag 7 (must be 0 or 1)');
    expect(() => decodeEntries(w((b) => b.u8(2).path('x').varint(0o10000)))).toThrow('mode 10000 is not a permission mode');
    expect(() => decodeEntries(w((b) => b.u8(2).path('../x').varint(0o755)))).toThrow(/bad entries message: entry 0 .*refused path/);
    expect(() => decodeEntries(fileWith((b) => b.varint(1).u8(2).blob(Buffer.alloc(35))))).toThrow('op 0: a chunk list of 35 bytes');
    expect(() => decodeEntries(fileWith((b) => b.varint(1).u8(2).blob(chunk(0))))).toThrow('op 0: a chunk of 0 bytes');
    expect(() => decodeEntries(fileWith((b) => b.varint(1).u8(2).blob(chunk(0xffffffff))))).toThrow('op 0: a chunk of 4294967295 bytes');
    expect(() => decodeEntries(fileWith((b) => b.varint(1).u8(5)))).toThrow('op 0: unknown chunk op 5');
    expect(() => decodeIds(Buffer.alloc(33))).toThrow('bad need message: 33 bytes, not a multiple of 32');
  });
});
