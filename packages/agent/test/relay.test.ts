// The relay's two ends in one process: a chunk server over a fake source (files in a temp directory) and a
// worker's fetch. What matters is what the worker is left with when things go wrong: whole, verified chunks in
// order, and the count of them, so that the client can send the rest.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFallbackChunker, createNativeChunker, loadNative, type Chunker } from '@skysync/chunking';
import type { RelayOffer } from '@skysync/protocol';
import { RelayServer, fetchFromRelay, headAddresses, orderCandidates, type ChunkLocation, type ChunkSource } from '../src/relay/index.js';

const native = loadNative();
let chunker: Chunker;
let root: string;
/** 200 chunks of 1..64 KiB, one after another in `data.bin`. */
const ids: Buffer[] = [];
const lens: number[] = [];
const offsets: number[] = [];
let data: Buffer;

/** Serves the chunks from `data.bin`; `tweak` changes the answer for one chunk index. */
function source(tweak: (i: number) => ChunkLocation | null | 'wait' | undefined = () => undefined): ChunkSource {
  const byKey = new Map(ids.map((id, i) => [id.toString('hex'), i]));
  const answer = (id: Buffer): ChunkLocation | null | 'wait' => {
    const i = byKey.get(id.toString('hex'));
    if (i === undefined) return null;
    const t = tweak(i);
    return t === undefined ? { path: 'data.bin', offset: offsets[i]!, len: lens[i]! } : t;
  };
  return {
    findNow: (id) => {
      const a = answer(id);
      return a === 'wait' ? undefined : a;
    },
    find: async (id) => {
      for (;;) {
        const a = answer(id);
        if (a !== 'wait') return a;
        await new Promise((r) => setTimeout(r, 5));
      }
    },
  };
}

async function fetchAll(offer: RelayOffer, opts: { idleMs?: number; connectMs?: number } = {}) {
  const got: Buffer[] = [];
  const report = await fetchFromRelay(offer, ids, lens, async (b) => void got.push(Buffer.from(b)), { chunker, zstd: native, ...opts });
  const bytes = Buffer.concat(got);
  // Whatever happened, the worker holds exactly the first `report.chunks` chunks.
  const expected = lens.slice(0, report.chunks).reduce((a, b) => a + b, 0);
  expect(bytes.length).toBe(expected);
  expect(report.bytes).toBe(expected);
  expect(bytes.equals(data.subarray(0, expected))).toBe(true);
  return report;
}

async function serve(src: ChunkSource): Promise<RelayServer> {
  return RelayServer.open({ root, source: src, chunker, zstd: native, log: () => {} });
}

describe('relay', () => {
  beforeAll(async () => {
    chunker = native ? createNativeChunker(native) : await createFallbackChunker();
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-relay-unit-'));
    const parts: Buffer[] = [];
    let off = 0;
    for (let i = 0; i < 200; i++) {
      const c = randomBytes(1 + ((i * 7919) % 65536));
      parts.push(c);
      ids.push(chunker.blake3(c));
      lens.push(c.length);
      offsets.push(off);
      off += c.length;
    }
    data = Buffer.concat(parts);
    fs.writeFileSync(path.join(root, 'data.bin'), data);
  });

  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

  it('delivers every chunk, in the order asked, and closes when told', async () => {
    const server = await serve(source());
    try {
      const report = await fetchAll(server.offer(['127.0.0.1']));
      expect(report).toMatchObject({ chunks: 200, error: null, address: '127.0.0.1' });
      expect(server.bytesServed).toBe(data.length);
    } finally {
      await server.close();
    }
    const after = await fetchAll(server.offer(['127.0.0.1']), { connectMs: 1000 });
    expect(after.error).toMatch(/could not reach the head's relay/);
  });

  it('waits for chunks its source does not hold yet (a head still receiving them)', async () => {
    const t0 = Date.now();
    // Chunk i turns up i ms after the start, as if the head received them one by one.
    const server = await serve(source((i) => (Date.now() - t0 < i ? 'wait' : undefined)));
    try {
      expect(await fetchAll(server.offer(['127.0.0.1']))).toMatchObject({ chunks: 200, error: null });
    } finally {
      await server.close();
    }
  });

  it('tries the next address when one does not answer', async () => {
    const server = await serve(source());
    try {
      const report = await fetchAll(server.offer(['relay.invalid', '127.0.0.1']));
      expect(report).toMatchObject({ chunks: 200, error: null, address: '127.0.0.1' });
    } finally {
      await server.close();
    }
  });

  it('stops at a chunk that does not match its id, keeping the ones before', async () => {
    // Chunk 120 served from the wrong place (same length, other bytes): a bad or confused head.
    const server = await serve(source((i) => (i === 120 ? { path: 'data.bin', offset: 0, len: lens[120]! } : undefined)));
    try {
      const report = await fetchAll(server.offer(['127.0.0.1']));
      expect(report.chunks).toBe(120);
      expect(report.error).toMatch(/does not match its id/);
    } finally {
      await server.close();
    }
  });

  it('stops at a chunk the head does not hold, keeping the ones before', async () => {
    const server = await serve(source((i) => (i === 77 ? null : undefined)));
    try {
      const report = await fetchAll(server.offer(['127.0.0.1']));
      expect(report.chunks).toBe(77);
      expect(report.error).toMatch(/does not hold chunk/);
    } finally {
      await server.close();
    }
  });

  it('hashes chunks from files the push did not write before sending them, and refuses a changed one', async () => {
    // No recorded length: the server reads what is asked and checks it; chunk 50 "changed on disk".
    const server = await serve(source((i) => ({ path: 'data.bin', offset: i === 50 ? offsets[50]! + 1 : offsets[i]! })));
    try {
      const report = await fetchAll(server.offer(['127.0.0.1']));
      expect(report.chunks).toBe(50);
      expect(report.error).toMatch(/does not hold chunk/);
    } finally {
      await server.close();
    }
  });

  it('keeps whole chunks only when the head goes away midway', async () => {
    let server: RelayServer | null = null;
    server = await serve(
      source((i) => {
        if (i === 150) void server!.close();
        return i >= 150 ? 'wait' : undefined;
      }),
    );
    const report = await fetchAll(server.offer(['127.0.0.1']));
    expect(report.chunks).toBeLessThanOrEqual(150);
    expect(report.error).not.toBeNull();
  });

  it('gives up on a head that stops answering', async () => {
    const server = await serve(source((i) => (i >= 10 ? 'wait' : undefined)));
    try {
      const report = await fetchAll(server.offer(['127.0.0.1']), { idleMs: 300 });
      expect(report.chunks).toBe(10);
      expect(report.error).toMatch(/nothing arrived/);
    } finally {
      await server.close();
    }
  });

  it('refuses a wrong token', async () => {
    const server = await serve(source());
    try {
      const report = await fetchAll({ ...server.offer(['127.0.0.1']), token: randomBytes(32).toString('hex') });
      expect(report.chunks).toBe(0);
      expect(report.error).toMatch(/wrong token/);
      expect(server.bytesServed).toBe(0);
    } finally {
      await server.close();
    }
  });

  it('drops a connection that sends nothing or something else, without waiting for more', async () => {
    const server = await serve(source());
    try {
      const closed = (payload: Buffer | null): Promise<number> =>
        new Promise((resolve) => {
          const t0 = Date.now();
          const sock = net.connect({ host: '127.0.0.1', port: server.port });
          sock.on('error', () => {});
          sock.on('close', () => resolve(Date.now() - t0));
          if (payload) sock.write(payload);
        });
      // A huge declared length right after the magic is refused at once, not buffered.
      const huge = Buffer.alloc(9 + 5);
      Buffer.from('\u0000SKYSYNC\u0001', 'latin1').copy(huge);
      huge.writeUInt32LE(16 * 1024 * 1024, 9);
      huge[13] = 13;
      expect(await closed(huge)).toBeLessThan(1000);
      expect(await closed(Buffer.from('SSH-2.0-probe\r\n'))).toBeLessThan(1000);
      const silent = await closed(null);
      expect(silent).toBeGreaterThanOrEqual(4500);
      expect(silent).toBeLessThan(8000);
    } finally {
      await server.close();
    }
  }, 15_000);

  it('offers private addresses first and loopback last; a worker tries its own subnet first and itself last', () => {
    const iface = (address: string, family: 'IPv4' | 'IPv6', cidr: string, internal = false) =>
      ({ address, family, cidr, internal, netmask: '', mac: '', scopeid: 0 }) as os.NetworkInterfaceInfo;
    const head = headAddresses({
      lo: [iface('127.0.0.1', 'IPv4', '127.0.0.1/8', true)],
      eth0: [iface('203.0.113.7', 'IPv4', '203.0.113.7/24'), iface('fe80::1', 'IPv6', 'fe80::1/64'), iface('2001:db8::7', 'IPv6', '2001:db8::7/64')],
      eth1: [iface('10.1.2.3', 'IPv4', '10.1.2.3/16'), iface('fd00::3', 'IPv6', 'fd00::3/64')],
      docker0: [iface('172.17.0.1', 'IPv4', '172.17.0.1/16')],
      weird: [iface('169.254.3.3', 'IPv4', '169.254.3.3/16')],
    });
    expect(head).toEqual(['10.1.2.3', '172.17.0.1', '203.0.113.7', 'fd00::3', '2001:db8::7', '127.0.0.1']);
    const worker = {
      eth1: [iface('10.1.9.9', 'IPv4', '10.1.9.9/16')],
      docker0: [iface('172.17.0.1', 'IPv4', '172.17.0.1/16')],
    };
    expect(orderCandidates(['172.17.0.1', '203.0.113.7', '10.1.2.3', '127.0.0.1'], worker)).toEqual(['10.1.2.3', '203.0.113.7', '172.17.0.1', '127.0.0.1']);
  });
});
