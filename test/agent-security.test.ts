// The agent must never write outside its destination, whatever a client sends: speak the protocol to the real
// agent bundle with hostile plans and check the filesystem.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNative } from '@skysync/chunking';
import { Connection, Frame, PROTOCOL_VERSION, encodeEntries, encodeFrame, MAGIC, type PlanEntry } from '@skysync/protocol';
import { LocalTarget } from '@skysync/transport';

const native = loadNative()!;
let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-sec-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

function fileEntry(p: string, data: Buffer): { entry: PlanEntry; data: Buffer } {
  const r = native.chunkBuffer(data, null);
  return {
    entry: {
      kind: 'file',
      path: p,
      mode: 0o644,
      size: data.length,
      mtimeSec: 1_700_000_000,
      mtimeNsec: 0,
      digest: r.digest,
      ops: r.chunks.length ? [{ op: 'chunks', chunks: r.chunks }] : [],
    },
    data,
  };
}

async function pushRaw(home: string, entries: PlanEntry[], data: Buffer[], raw?: Buffer): Promise<{ done: unknown; error: string | null }> {
  const ch = await new LocalTarget('local:' + home, home).openAgent();
  const conn = new Connection(ch.input, ch.output);
  await conn.sendJson(Frame.Hello, { protocol: PROTOCOL_VERSION, software: 'test', role: 'client', compression: ['none'], native: true, platform: 'x', node: 'x' });
  await conn.expect(Frame.Hello);
  await conn.sendJson(Frame.Begin, { op: 'push', dest: '~/sky_workdir', base: null, chunkParams: native.defaultChunkParams() });
  await conn.expect(Frame.State);
  await conn.sendJson(Frame.Plan, { mode: 'data', compression: 'none', deleteMode: 'placed', dryRun: false });
  let error: string | null = null;
  let done: unknown = null;
  try {
    if (raw) ch.output.write(raw);
    else await conn.send(Frame.Entries, encodeEntries(entries));
    for (const d of data) if (d.length) await conn.send(Frame.Data, d);
    await conn.send(Frame.PlanEnd, Buffer.alloc(0));
    await conn.send(Frame.DataEnd, Buffer.alloc(0));
    done = JSON.parse((await conn.expect(Frame.Done)).payload.toString());
  } catch (e) {
    error = (e as Error).message;
  }
  await ch.close();
  return { done, error };
}

describe('agent path safety', () => {
  it('refuses to write through a symlinked directory in the destination', async () => {
    const home = path.join(work, 'h1');
    const outside = path.join(work, 'outside');
    fs.mkdirSync(path.join(home, 'sky_workdir'), { recursive: true });
    fs.mkdirSync(outside, { recursive: true });
    fs.symlinkSync(outside, path.join(home, 'sky_workdir', 'evil'));
    const f = fileEntry('evil/pwned.txt', Buffer.from('owned\n'));
    const ok = fileEntry('fine.txt', Buffer.from('fine\n'));
    const { done } = await pushRaw(home, [f.entry, ok.entry], [f.data, ok.data]);
    expect(fs.readdirSync(outside)).toEqual([]);
    expect(fs.readFileSync(path.join(home, 'sky_workdir', 'fine.txt'), 'utf8')).toBe('fine\n');
    const failed = (done as { failed: Array<{ path: string; error: string }> }).failed;
    expect(failed.map((x) => x.path)).toEqual(['evil/pwned.txt']);
    expect(failed[0]!.error).toMatch(/symlink/);
  });

  it('refuses a symlink entry followed by a write through it in the same plan', async () => {
    const home = path.join(work, 'h2');
    const outside = path.join(work, 'outside2');
    fs.mkdirSync(outside, { recursive: true });
    const f = fileEntry('link/pwned.txt', Buffer.from('owned\n'));
    const { done } = await pushRaw(home, [{ kind: 'symlink', path: 'link', target: outside }, f.entry], [f.data]);
    // The plan contradicts itself; whichever entry loses, nothing may land outside the destination.
    expect(fs.readdirSync(outside)).toEqual([]);
    expect((done as { failed: unknown[] }).failed).toHaveLength(1);
  });

  for (const bad of ['../escape.txt', '/tmp/abs.txt', 'a/../../x', 'nul\0byte']) {
    it(`rejects the path ${JSON.stringify(bad)} with an error and writes nothing`, async () => {
      const home = path.join(work, 'h3-' + Buffer.from(bad).toString('hex'));
      // Build the entry by hand: the encoder itself is fine with any string.
      const f = fileEntry('placeholder', Buffer.from('x'));
      const payload = encodeEntries([{ ...f.entry, path: bad }]);
      const raw = Buffer.concat([encodeFrame(Frame.Entries, payload)]);
      const { error } = await pushRaw(home, [], [], raw);
      expect(error).toMatch(/refused|path/i);
      expect(fs.existsSync(path.join(work, 'escape.txt'))).toBe(false);
      expect(fs.existsSync('/tmp/abs.txt')).toBe(false);
      expect(fs.readdirSync(path.join(home, 'sky_workdir'))).toEqual([]);
    });
  }

  it('rejects a chunk whose bytes do not match its id, keeping the old file', async () => {
    const home = path.join(work, 'h4');
    const good = fileEntry('data.txt', Buffer.from('version one\n'));
    await pushRaw(home, [good.entry], [good.data]);
    const next = fileEntry('data.txt', Buffer.from('version two\n'));
    const { done } = await pushRaw(home, [next.entry], [Buffer.from('VERSION TWO\n')]);
    expect(fs.readFileSync(path.join(home, 'sky_workdir', 'data.txt'), 'utf8')).toBe('version one\n');
    expect((done as { failed: Array<{ error: string }> }).failed[0]!.error).toMatch(/does not match/);
    // No temp files left behind.
    expect(fs.readdirSync(path.join(home, 'sky_workdir'))).toEqual(['data.txt']);
  });

  it('ignores a banner before the magic (a chatty login shell)', () => {
    const d = Buffer.concat([Buffer.from('motd\n'), MAGIC]);
    expect(d.indexOf(MAGIC)).toBe(5);
  });
});
