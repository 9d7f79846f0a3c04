// Lanes in one process: the client's pump spreading blocks over several connections, the agent's merger putting
// them back in order, and the lane socket admitting only the current push's token.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Transform } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataStream, LaneMerger } from '@skysync/apply';
import { loadNative } from '@skysync/chunking';
import { Connection, Frame, createBlockDecoder, type Compression, LanesSwitch } from '@skysync/protocol';
import { DataPump, LANE_AFTER_BYTES, compressLevel, type OpenLane } from '@skysync/transfer';
import { LaneServer } from '../src/lanes.js';
import { Rng, seedFromEnv } from '../../../test/helpers/random.js';

const native = loadNative();
const compression: Compression = native ? 'zstd' : 'deflate';
let tmp: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-lanes-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Two connections joined back to back; what one side writes reaches the other after a random delay per piece. */
function pair(rng: Rng): { a: Connection; b: Connection } {
  const delayed = (): Transform =>
    new Transform({
      transform(chunk: Buffer, _enc, cb) {
        setTimeout(() => cb(null, chunk), rng.int(3));
      },
    });
  const ab = delayed();
  const ba = new PassThrough();
  return { a: new Connection(ba, ab), b: new Connection(ab, ba) };
}

/** The agent's side of a push's data: main-connection frames into the merger, as servePush does. */
async function receiveMain(conn: Connection, merger: LaneMerger, codec: Compression = compression): Promise<void> {
  const decoder = createBlockDecoder(codec, native);
  for (;;) {
    const f = await conn.next();
    if (!f) throw new Error('main connection ended early');
    if (f.type === Frame.Data) await merger.main(decoder.decode(f.payload));
    else if (f.type === Frame.Lanes) merger.switchTo(LanesSwitch.decode(f.payload).lanes);
    else if (f.type === Frame.DataEnd) return merger.end();
    else throw new Error(`unexpected frame ${f.type}`);
  }
}

describe('lanes', () => {
  it('the merger gives back exactly what the pump took in, whatever the lanes and their timing (seeded)', async () => {
    const seed = seedFromEnv();
    const rng = new Rng(seed);
    try {
      for (let round = 0; round < 6; round++) {
        const laneCount = 1 + rng.int(6);
        const main = pair(rng);
        const lanes = Array.from({ length: laneCount }, (_, i) => ({ id: i + 1, ...pair(rng) }));
        const stream = new DataStream();
        const merger = new LaneMerger(stream, () => createBlockDecoder(compression, native), 4 << 20);
        for (const l of lanes) merger.attach(l.id, l.b);
        const pump = new DataPump(main.a, compression, native, tmp);
        // Lanes become ready a little after they are asked for, as over a network (here a few turns of the
        // microtask queue: in memory the whole push is sent before a timer would fire).
        pump.offerLanes(async () => {
          for (let i = rng.int(5); i > 0; i--) await Promise.resolve();
          return lanes.map((l): OpenLane => ({ id: l.id, conn: l.a, close: () => l.a.end() }));
        });
        const total = LANE_AFTER_BYTES + (4 << 20) + rng.int(24 << 20);
        const sent: Buffer[] = [];
        for (let n = 0; n < total; ) {
          const piece = rng.chance(0.5) ? rng.bytes(1 + rng.int(256 << 10)) : Buffer.alloc(1 + rng.int(2 << 20), rng.int(256));
          sent.push(piece);
          n += piece.length;
        }
        const size = sent.reduce((a, b) => a + b.length, 0);
        const sending = (async () => {
          for (const piece of sent) await pump.add(piece);
          await pump.finish();
        })();
        const receiving = receiveMain(main.b, merger);
        // The builder takes the data in its own sizes while it arrives.
        const got: Buffer[] = [];
        const consuming = (async () => {
          for (let n = 0; n < size; ) {
            const k = Math.min(size - n, 1 + rng.int(3 << 20));
            got.push(await stream.take(k));
            n += k;
          }
        })();
        await Promise.all([sending, receiving, consuming]);
        expect(Buffer.concat(got).equals(Buffer.concat(sent)), `round ${round}: ${laneCount + 1} channels`).toBe(true);
        expect(pump.laneCount).toBe(laneCount + 1);
        merger.close();
      }
    } catch (e) {
      throw new Error(`${(e as Error).message} (replay with SKYSYNC_SEED=${seed})`);
    }
  }, 120_000);

  it.runIf(native)('SKYSYNC_COMPRESS_LEVEL: blocks that did not compress switch to level 1, and every lane still decodes (seeded)', async () => {
    const seed = seedFromEnv();
    const rng = new Rng(seed);
    // Records the levels asked of every encoder, around the real zstd binding.
    const asked: number[] = [];
    const real = native!;
    const recording = {
      ZstdDecoder: real.ZstdDecoder,
      ZstdEncoder: class {
        private readonly enc: InstanceType<typeof real.ZstdEncoder>;
        constructor(level: number) {
          asked.push(level);
          this.enc = new real.ZstdEncoder(level);
        }
        write(b: Buffer): Buffer {
          return this.enc.write(b);
        }
        flush(): Buffer {
          return this.enc.flush();
        }
        finish(): Buffer {
          return this.enc.finish();
        }
        setLevel(level: number): void {
          asked.push(level);
          this.enc.setLevel(level);
        }
      },
    };
    const before = process.env.SKYSYNC_COMPRESS_LEVEL;
    process.env.SKYSYNC_COMPRESS_LEVEL = '9';
    try {
      const main = pair(rng);
      const lanes = [1, 2].map((id) => ({ id, ...pair(rng) }));
      const stream = new DataStream();
      const merger = new LaneMerger(stream, () => createBlockDecoder('zstd', real), 4 << 20);
      for (const l of lanes) merger.attach(l.id, l.b);
      const pump = new DataPump(main.a, 'zstd', recording, tmp);
      expect(pump.level).toBe(9);
      pump.offerLanes(async () => lanes.map((l): OpenLane => ({ id: l.id, conn: l.a, close: () => l.a.end() })));
      // Runs of noise and of text, a few blocks each, so each lane sees both kinds one after the other.
      const sent: Buffer[] = [];
      const line = Buffer.from('def train(model, data):\n    return model.fit(data)  # text compresses\n');
      for (let run = 0; run < 10; run++) {
        const len = (2 + rng.int(4)) << 20;
        sent.push(run % 2 === 0 ? rng.bytes(len) : Buffer.alloc(len, line));
      }
      const size = sent.reduce((a, b) => a + b.length, 0);
      const sending = (async () => {
        for (const piece of sent) await pump.add(piece);
        await pump.finish();
      })();
      const receiving = receiveMain(main.b, merger, 'zstd');
      // Taken in pieces, as the builder does: the stream holds only a few megabytes ahead.
      const pieces: Buffer[] = [];
      const consuming = (async () => {
        for (let n = 0; n < size; n += pieces[pieces.length - 1]!.length) pieces.push(await stream.take(Math.min(size - n, 1 << 20)));
      })();
      await Promise.all([sending, receiving, consuming]);
      const got = Buffer.concat(pieces);
      expect(got.equals(Buffer.concat(sent)), `replay with SKYSYNC_SEED=${seed}`).toBe(true);
      // Every encoder started at 9; noise sent some to 1, and text after noise brought them back to 9.
      expect(
        asked.filter((l) => l !== 1 && l !== 9),
        `replay with SKYSYNC_SEED=${seed}`,
      ).toEqual([]);
      expect(asked.filter((l) => l === 1).length, `replay with SKYSYNC_SEED=${seed}`).toBeGreaterThan(0);
      expect(asked.lastIndexOf(9), `replay with SKYSYNC_SEED=${seed}`).toBeGreaterThan(asked.indexOf(1));
      merger.close();
    } finally {
      if (before === undefined) delete process.env.SKYSYNC_COMPRESS_LEVEL;
      else process.env.SKYSYNC_COMPRESS_LEVEL = before;
    }
  });

  it('SKYSYNC_COMPRESS_LEVEL that is not a zstd level is refused with what to set', () => {
    for (const bad of ['0', '20', '3.5', 'fast']) {
      expect(() => compressLevel(bad)).toThrow(new RegExp(`SKYSYNC_COMPRESS_LEVEL=${bad.replace('.', '\\.')}: not a zstd level; set a whole number from 1 to 19`));
    }
    expect(compressLevel('')).toBe(3);
    expect(compressLevel('19')).toBe(19);
  });

  it('refuses a lanes frame that names a lane not open, or data sent out of turn', async () => {
    const rng = new Rng(1);
    const merger = new LaneMerger(new DataStream(), () => createBlockDecoder('none', null), 1 << 20);
    expect(() => merger.switchTo([1])).toThrow(/lane 1, which is not open/);
    const lane = pair(rng);
    merger.attach(1, lane.b);
    expect(() => merger.attach(1, lane.b)).toThrow(/opened twice/);
    merger.switchTo([1]);
    // Lane 1 sends two blocks while the main connection sends none: the second is never its turn.
    await lane.a.send(Frame.Data, Buffer.from('one'));
    await lane.a.send(Frame.Data, Buffer.from('two'));
    await lane.a.send(Frame.DataEnd, Buffer.alloc(0));
    await expect(merger.end()).rejects.toThrow(/lane 1 sent data out of turn/);
  });

  it('admits a lane only with the current push token, each number once, into a private socket', async () => {
    const home = path.join(tmp, 'home');
    const log: string[] = [];
    const server = await LaneServer.open(home, (m) => log.push(m));
    expect(fs.statSync(path.join(home, '.skysync', 'run')).mode & 0o777).toBe(0o700);
    expect(fs.statSync(server.socketPath).mode & 0o777).toBe(0o600);
    const admitted: number[] = [];
    const offer = server.expect((id) => admitted.push(id));

    /** Connects, greets, and says whether the server answered with a lane-hello before closing. */
    const greet = (token: string, lane: unknown): Promise<boolean> =>
      new Promise((resolve) => {
        const sock = net.createConnection(server.socketPath);
        const conn = new Connection(sock, sock);
        void conn.sendJson(Frame.LaneHello, { token, lane });
        conn.next().then(
          (f) => {
            sock.destroy();
            resolve(f?.type === Frame.LaneHello);
          },
          () => resolve(false),
        );
      });
    expect(await greet('00'.repeat(32), 1)).toBe(false);
    expect(await greet(offer.token, 0)).toBe(false);
    expect(await greet(offer.token, 'x')).toBe(false);
    expect(await greet(offer.token, 2)).toBe(true);
    expect(await greet(offer.token, 2)).toBe(false);
    expect(admitted).toEqual([2]);
    expect(log.join('\n')).toMatch(/wrong token/);
    // The push is over: its token opens nothing more.
    server.closeExpected();
    expect(await greet(offer.token, 3)).toBe(false);
    expect(admitted).toEqual([2]);
  });
});
