// Thousands of small files through the real agent: with the addon they go through the batch writer (parallel,
// off the JavaScript thread), without it (SKYSYNC_NO_NATIVE=1) through the one-by-one TypeScript path. Both must
// leave the destination equal to the source byte for byte, with modes and mtimes, and no temp file behind.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNative } from '@skysync/chunking';
import { push } from '@skysync/engine';
import { Connection, Frame, PROTOCOL_VERSION, encodeEntries, type PlanEntry } from '@skysync/protocol';
import { LocalTarget } from '@skysync/transport';
import { Rng } from './helpers/random.js';

const native = loadNative()!;
let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-small-'));
  process.env.SKYSYNC_STATE_DIR = path.join(work, 'state');
});
afterAll(() => {
  delete process.env.SKYSYNC_NO_NATIVE;
  fs.rmSync(work, { recursive: true, force: true });
});

interface Seen {
  kind: 'file' | 'dir';
  mode: number;
  mtimeNs: bigint;
  data?: Buffer;
}

function snapshot(root: string): Map<string, Seen> {
  const out = new Map<string, Seen>();
  const visit = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(root, rel))) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = path.join(root, r);
      const st = fs.lstatSync(abs, { bigint: true });
      const mode = Number(st.mode & 0o7777n);
      if (st.isDirectory()) {
        out.set(r, { kind: 'dir', mode, mtimeNs: 0n });
        visit(r);
      } else out.set(r, { kind: 'file', mode, mtimeNs: st.mtimeNs, data: fs.readFileSync(abs) });
    }
  };
  visit('');
  return out;
}

/** Differences, as lines. The one-by-one path (and a touched file's new mtime) goes through a double and
 * microseconds, a couple of microseconds off; the batch writer sets mtimes exactly (native/core/tests/write.rs). */
function differences(src: Map<string, Seen>, dest: Map<string, Seen>, mtimeSlackNs: bigint): string[] {
  const lines: string[] = [];
  for (const [p, s] of src) {
    const d = dest.get(p);
    if (!d) lines.push(`missing ${p}`);
    else if (d.kind !== s.kind) lines.push(`kind ${p}`);
    else if (d.mode !== s.mode) lines.push(`mode ${p}: ${s.mode.toString(8)} != ${d.mode.toString(8)}`);
    else if (s.kind === 'file') {
      if (!d.data!.equals(s.data!)) lines.push(`content ${p}`);
      const dt = d.mtimeNs - s.mtimeNs;
      if (dt > mtimeSlackNs || -dt > mtimeSlackNs) lines.push(`mtime ${p}: ${s.mtimeNs} != ${d.mtimeNs}`);
    }
  }
  for (const p of dest.keys()) if (!src.has(p)) lines.push(`extra ${p}`);
  return lines;
}

/** Small files in nested directories, some sharing content (their chunks cross once), some empty, and a few large
 * ones in between (the batch is flushed before each). */
function makeSource(root: string, rng: Rng, files: number): void {
  const shared = Array.from({ length: 20 }, () => rng.bytes(1 + rng.int(20_000)));
  for (let i = 0; i < files; i++) {
    const dir = `d${i % 13}/e${i % 37}` + (i % 3 === 0 ? `/f${i % 101}` : '');
    fs.mkdirSync(path.join(root, dir), { recursive: true });
    const r = rng.next();
    const data =
      r < 0.03
        ? Buffer.alloc(0)
        : r < 0.15
          ? shared[rng.int(shared.length)]!
          : r < 0.16
            ? rng.bytes(300 * 1024 + rng.int(400 * 1024))
            : r < 0.5
              ? Buffer.from(`line ${i}\n`.repeat(1 + rng.int(2000)))
              : rng.bytes(1 + rng.int(20 * 1024));
    const file = path.join(root, dir, `file-${i}${i % 5 === 0 ? '.sh' : '.txt'}`);
    fs.writeFileSync(file, data);
    fs.chmodSync(file, i % 5 === 0 ? 0o755 : i % 7 === 0 ? 0o600 : 0o644);
    fs.utimesSync(file, 1_600_000_000 + i, 1_600_000_000 + i + rng.int(1e9) / 1e9);
  }
  fs.chmodSync(path.join(root, 'd1'), 0o700);
}

function tempsLeft(root: string): string[] {
  const out: string[] = [];
  const visit = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.name.startsWith('.skysync-')) out.push(path.join(dir, e.name));
      else if (e.isDirectory()) visit(path.join(dir, e.name));
    }
  };
  visit(root);
  return out;
}

describe('many small files through the agent', () => {
  for (const agent of ['native', 'fallback'] as const) {
    it(`arrive byte for byte, with modes and mtimes (${agent} agent)`, async () => {
      if (agent === 'fallback') process.env.SKYSYNC_NO_NATIVE = '1';
      else delete process.env.SKYSYNC_NO_NATIVE;
      try {
        const rng = new Rng(agent === 'native' ? 7 : 8);
        const src = path.join(work, `src-${agent}`);
        const home = path.join(work, `home-${agent}`);
        const dest = path.join(home, 'sky_workdir');
        makeSource(src, rng, 3000);
        const target = new LocalTarget('local:' + home, home);
        const slack = 10_000n;

        const first = await push({ source: src, target, native });
        expect(first.failed).toEqual([]);
        expect(differences(snapshot(src), snapshot(dest), slack)).toEqual([]);
        expect(tempsLeft(home)).toEqual([]);

        // The agent kept its state: the next push sends literal data straight away (data mode), and only what changed.
        let touched = 0;
        for (const [p, s] of snapshot(src)) {
          if (s.kind !== 'file' || rng.chance(0.8)) continue;
          const abs = path.join(src, p);
          if (rng.chance(0.5)) fs.writeFileSync(abs, Buffer.concat([s.data!, rng.bytes(1 + rng.int(3000))]));
          else fs.writeFileSync(abs, rng.bytes(rng.int(10_000)));
          touched++;
        }
        fs.mkdirSync(path.join(src, 'new/deep/dir'), { recursive: true });
        for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(src, 'new/deep/dir', `n${i}`), rng.bytes(rng.int(5000)));
        const second = await push({ source: src, target, native });
        expect(second.failed).toEqual([]);
        expect(second.filesChanged).toBeGreaterThanOrEqual(300);
        expect(second.filesChanged).toBeLessThanOrEqual(touched + 300);
        expect(differences(snapshot(src), snapshot(dest), slack)).toEqual([]);
        expect(tempsLeft(home)).toEqual([]);

        const state = fs.readdirSync(path.join(home, '.skysync', 'state'));
        expect(state.some((f) => f.endsWith(agent === 'native' ? '.tree' : '.manifest'))).toBe(true);
        const again = await push({ source: src, target, native });
        expect(again.filesChanged).toBe(0);
      } finally {
        delete process.env.SKYSYNC_NO_NATIVE;
      }
    }, 300_000);
  }

  it('records what was placed the same way through updatePacked as through update', () => {
    const rng = new Rng(9);
    const kinds = ['file', 'dir', 'symlink'] as const;
    const entries = Array.from({ length: 3000 }, (_, i) => {
      const kind = kinds[i % 10 === 0 ? 1 : i % 17 === 0 ? 2 : 0]!;
      const data = rng.bytes(rng.int(100_000));
      return {
        path: Buffer.from(`d${i % 50}/f\u00fcr-${i}`, 'utf8').toString('latin1'),
        kind,
        mode: kind === 'symlink' ? 0o777 : 0o644 | (i % 2),
        size: kind === 'file' ? data.length : 4096,
        mtimeSec: i % 3 ? 1_600_000_000 + i : -5 - i,
        mtimeNsec: (i * 7919) % 1_000_000_000,
        observedMtimeNs: String(1_600_000_000_000_000_000n + BigInt(i)),
        ino: String(2n ** 60n + BigInt(i)),
        target: kind === 'symlink' ? `../t${i}` : undefined,
        chunks: kind === 'file' ? native.chunkBuffer(data, null).chunks : undefined,
      };
    });
    const one = native.Tree.empty(null);
    one.update(entries, []);
    const records = Buffer.alloc(entries.length * 48);
    entries.forEach((e, k) => {
      const o = k * 48;
      records[o] = kinds.indexOf(e.kind);
      records.writeUInt32LE(e.mode, o + 4);
      records.writeBigUInt64LE(BigInt(e.size), o + 8);
      records.writeBigInt64LE(BigInt(e.mtimeSec), o + 16);
      records.writeUInt32LE(e.mtimeNsec, o + 24);
      records.writeUInt32LE((e.chunks?.length ?? 0) / 36, o + 28);
      records.writeBigInt64LE(BigInt(e.observedMtimeNs), o + 32);
      records.writeBigUInt64LE(BigInt(e.ino), o + 40);
    });
    const packed = native.Tree.empty(null);
    const targets = entries.filter((e) => e.target).map((e) => e.target);
    packed.updatePacked(entries.map((e) => e.path).join('\0'), records, Buffer.concat(entries.flatMap((e) => (e.chunks ? [e.chunks] : []))), targets.join('\0'), []);
    const a = path.join(work, 'one.tree');
    const b = path.join(work, 'packed.tree');
    one.save(a);
    packed.save(b);
    expect(fs.readFileSync(b).equals(fs.readFileSync(a))).toBe(true);
    expect(() => packed.updatePacked('x\0y', Buffer.alloc(48), Buffer.alloc(0), '', [])).toThrow(/bad paths/);
  });

  it('leaves no temp file and no partial file when the client goes away in the middle', async () => {
    const rng = new Rng(10);
    const home = path.join(work, 'home-cut');
    const files = Array.from({ length: 2000 }, (_, i) => ({ path: `d${i % 20}/f${i}`, data: rng.bytes(1 + rng.int(8000)) }));
    const entries: PlanEntry[] = files.map((f) => {
      const r = native.chunkBuffer(f.data, null);
      return { kind: 'file', path: f.path, mode: 0o644, size: f.data.length, mtimeSec: 1_700_000_000, mtimeNsec: 0, digest: r.digest, ops: [{ op: 'chunks', chunks: r.chunks }] };
    });
    const ch = await new LocalTarget('local:' + home, home).openAgent();
    const conn = new Connection(ch.input, ch.output);
    await conn.sendJson(Frame.Hello, { protocol: PROTOCOL_VERSION, software: 'test', role: 'client', compression: ['none'], native: true, platform: 'x', node: 'x' });
    await conn.expect(Frame.Hello);
    await conn.sendJson(Frame.Begin, { op: 'push', dest: '~/sky_workdir', base: null, chunkParams: native.defaultChunkParams() });
    await conn.expect(Frame.State);
    await conn.sendJson(Frame.Plan, { mode: 'data', compression: 'none', deleteMode: 'placed', dryRun: false });
    await conn.send(Frame.Entries, encodeEntries(entries));
    // Most of the data: several batches are written or in flight when the connection drops.
    const some = Buffer.concat(files.slice(0, 1500).map((f) => f.data));
    for (let o = 0; o < some.length; o += 1 << 20) await conn.send(Frame.Data, some.subarray(o, o + (1 << 20)));
    await ch.close();
    const dest = path.join(home, 'sky_workdir');
    expect(tempsLeft(home)).toEqual([]);
    expect([...snapshot(dest).values()].filter((x) => x.kind === 'file')).toEqual([]);
  });
});
