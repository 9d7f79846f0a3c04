// Shared by the receiver's unit tests: plan entries for given bytes, and one sync driven in process.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createNativeChunker, loadNative, type Chunker, type NativeAddon } from '@skysync/chunking';
import type { FileEntry, PlanEntry } from '@skysync/protocol';
import { Receiver, type ReceiveResult, type ReceiverOptions } from '../src/index.js';

export const native: NativeAddon = (() => {
  const n = loadNative();
  if (!n) throw new Error('the native addon did not load (pnpm --filter @skysync/native build)');
  return n;
})();
export const chunker: Chunker = createNativeChunker(native);

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `skysync-apply-${prefix}-`));
}

export function fileEntry(p: string, data: Buffer, mode = 0o644): FileEntry {
  const r = chunker.chunkBuffer(data);
  return { kind: 'file', path: p, mode, size: data.length, mtimeSec: 1_700_000_000, mtimeNsec: 0, digest: r.digest, ops: [{ op: 'chunks', chunks: r.chunks }] };
}

export function receiverFor(root: string, over: Partial<ReceiverOptions> = {}): Receiver {
  return new Receiver({
    root,
    chunker,
    held: { recipeOf: () => null, locate: (ids) => ids.map(() => null) },
    untrusted: new Set(),
    isPlaced: () => true,
    deleteMode: 'mirror',
    native,
    replaceFile: native.replaceFile,
    ...over,
  });
}

/** One data-mode sync: the entries, then `data` on the stream (each file's bytes, in plan order, unless given). */
export async function sync(root: string, entries: PlanEntry[], opts: { data?: Buffer; over?: Partial<ReceiverOptions> } = {}): Promise<ReceiveResult> {
  const r = receiverFor(root, opts.over);
  r.add(entries, true);
  const data = opts.data ?? Buffer.concat(entries.map((e) => (e.kind === 'file' ? ((e as FileEntry & { bytes?: Buffer }).bytes ?? Buffer.alloc(0)) : Buffer.alloc(0))));
  if (data.length) r.stream.push(data);
  r.stream.end();
  return r.transition();
}

/** A file entry that remembers its bytes, for `sync`. */
export function withBytes(p: string, data: Buffer, mode = 0o644): FileEntry {
  return Object.assign(fileEntry(p, data, mode), { bytes: data });
}

/** Every path under `root` (relative, sorted), without following symlinks. */
export function listAll(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string): void => {
    let names: fs.Dirent[];
    try {
      names = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      // Gone meanwhile (a racer renamed it): what it held shows up under its new name.
      return;
    }
    for (const d of names) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      out.push(r);
      if (d.isDirectory()) walk(path.join(dir, d.name), r);
    }
  };
  walk(root, '');
  return out.sort();
}

export function leftovers(root: string): string[] {
  return listAll(root).filter((p) => path.basename(p).startsWith('.skysync-'));
}
