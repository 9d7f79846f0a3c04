// ISSUE22 defect 2, through the agent's push in process: a file entry whose digest, size or chunk length is
// wrong, followed by data that ends before that file's bytes arrive, must end the push with an error (which the
// main loop sends as an error frame), never with an unhandled rejection, and leave no temp file.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createNativeChunker, loadNative } from '@skysync/chunking';
import { Connection, Frame, ProtocolError, createBlockEncoder, encodeEntries, type FileEntry, type Plan, type PushBegin } from '@skysync/protocol';
import { servePush } from '../src/push.js';

const native = loadNative()!;
const chunker = createNativeChunker(native);

function pair(): { agent: Connection; client: Connection } {
  const toAgent = new PassThrough();
  const toClient = new PassThrough();
  return { agent: new Connection(toAgent, toClient), client: new Connection(toClient, toAgent) };
}

function entry(p: string, data: Buffer): FileEntry {
  const r = chunker.chunkBuffer(data);
  return { kind: 'file', path: p, mode: 0o644, size: data.length, mtimeSec: 1_700_000_000, mtimeNsec: 0, digest: r.digest, ops: [{ op: 'chunks', chunks: r.chunks }] };
}

function leftovers(root: string): string[] {
  const out: string[] = [];
  const visit = (dir: string): void => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      if (d.name.startsWith('.skysync-')) out.push(path.join(dir, d.name));
      else if (d.isDirectory()) visit(path.join(dir, d.name));
    }
  };
  visit(root);
  return out;
}

describe('a push whose entry lies about its bytes', () => {
  for (const wrong of ['digest', 'size', 'chunk length'] as const) {
    for (const size of [600, 3 << 20]) {
      it(`ends with an error and no temp file (wrong ${wrong}, ${size} bytes)`, async () => {
        const home = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-hostile-'));
        const unhandled: unknown[] = [];
        const onUnhandled = (e: unknown): void => void unhandled.push(e);
        process.on('unhandledRejection', onUnhandled);
        try {
          const { agent, client } = pair();
          const begin: PushBegin = { op: 'push', dest: '~/dest', base: null, chunkParams: { min: 4096, avg: 16384, max: 65536 } } as PushBegin;
          const serving = servePush(agent, begin, { home, chunker, native, log: () => {} });
          serving.catch(() => {});
          expect((await client.next())!.type).toBe(Frame.State);
          const good = Buffer.alloc(size, 1);
          const bad = entry('d/bad', Buffer.alloc(size, 2));
          const chunks = (bad.ops[0] as { chunks: Buffer }).chunks;
          if (wrong === 'digest') bad.digest = Buffer.alloc(32, 7);
          if (wrong === 'size') bad.size += 100;
          if (wrong === 'chunk length') chunks.writeUInt32LE(chunks.readUInt32LE(32) + 1000, 32);
          const plan: Plan = { mode: 'data', compression: 'none', deleteMode: 'placed', dryRun: false };
          await client.sendJson(Frame.Plan, plan);
          await client.send(Frame.Entries, encodeEntries([entry('d/good', good), bad]));
          await client.send(Frame.PlanEnd, Buffer.alloc(0));
          const enc = createBlockEncoder('none', native);
          await client.send(Frame.Data, enc.encode(Buffer.concat([good, Buffer.alloc(10, 2)])));
          await client.send(Frame.DataEnd, Buffer.alloc(0));
          await expect(serving).rejects.toThrow(ProtocolError);
          await new Promise((r) => setTimeout(r, 50));
          expect(unhandled).toEqual([]);
          expect(leftovers(home)).toEqual([]);
        } finally {
          process.off('unhandledRejection', onUnhandled);
          fs.rmSync(home, { recursive: true, force: true });
        }
      });
    }
  }
});
