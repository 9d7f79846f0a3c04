// What the agent placed at a destination: path -> record (with the recipe it wrote and the stat it saw right
// after). Saved atomically next to nothing the user owns: ~/.skysync/state/<hash of the destination>.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import type { PlacedRecord } from '@skysync/apply';
import { CHUNK_REF_SIZE } from '@skysync/chunking';
import { ByteReader, ByteWriter } from '@skysync/protocol';

const MAGIC = Buffer.from('SKYMANI1', 'latin1');
const KINDS = ['file', 'dir', 'symlink'] as const;

export interface Manifest {
  generation: string | null;
  entries: Map<string, PlacedRecord>;
}

export function manifestPath(home: string, dest: string): string {
  const h = createHash('sha256').update(dest).digest('hex').slice(0, 32);
  return path.join(home, '.skysync', 'state', `${h}.manifest`);
}

export function encodeManifest(m: Manifest): Buffer {
  const w = new ByteWriter(64 + m.entries.size * 96);
  w.bytes(MAGIC)
    .path(m.generation ?? '')
    .varint(m.entries.size);
  for (const [p, r] of m.entries) {
    w.path(p).u8(KINDS.indexOf(r.kind)).varint(r.mode).varint(r.size).zigzag(r.mtimeSec).varint(r.mtimeNsec);
    w.varint(r.stat.size).path(r.stat.mtimeNs).path(r.stat.ino);
    if (r.kind === 'symlink') w.path(r.target ?? '');
    if (r.kind === 'file') w.blob(r.chunks ?? Buffer.alloc(0)).bytes(r.digest ?? Buffer.alloc(32));
  }
  const body = w.finish();
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

export function decodeManifest(data: Buffer): Manifest {
  if (data.length < MAGIC.length + 32 || !data.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error('not a manifest');
  const body = data.subarray(0, data.length - 32);
  if (
    !createHash('sha256')
      .update(body)
      .digest()
      .equals(data.subarray(data.length - 32))
  )
    throw new Error('checksum mismatch');
  const r = new ByteReader(body);
  r.bytes(MAGIC.length);
  const generation = r.path() || null;
  const n = r.varint();
  const entries = new Map<string, PlacedRecord>();
  for (let i = 0; i < n; i++) {
    const p = r.path();
    const kind = KINDS[r.u8()];
    if (!kind) throw new Error('bad kind');
    const rec: PlacedRecord = {
      kind,
      mode: r.varint(),
      size: r.varint(),
      mtimeSec: r.zigzag(),
      mtimeNsec: r.varint(),
      stat: { size: r.varint(), mtimeNs: r.path(), ino: r.path() },
    };
    if (kind === 'symlink') rec.target = r.path();
    if (kind === 'file') {
      rec.chunks = Buffer.from(r.blob());
      if (rec.chunks.length % CHUNK_REF_SIZE !== 0) throw new Error('bad recipe');
      rec.digest = Buffer.from(r.bytes(32));
    }
    entries.set(p, rec);
  }
  r.end();
  return { generation, entries };
}

/** A missing or damaged manifest means "nothing known": the client then sends recipes and we look for chunks. */
export async function loadManifest(file: string): Promise<{ manifest: Manifest; warning: string | null }> {
  let data: Buffer;
  try {
    data = await fsp.readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { manifest: { generation: null, entries: new Map() }, warning: null };
    throw e;
  }
  try {
    return { manifest: decodeManifest(data), warning: null };
  } catch (e) {
    return {
      manifest: { generation: null, entries: new Map() },
      warning: `state file ${file} is damaged (${(e as Error).message}); starting over`,
    };
  }
}

export async function saveManifest(file: string, m: Manifest): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fh = await fsp.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    // No fsync: see Snapshot::save in native/core (a lost state only costs a full comparison next time).
    await fh.writeFile(encodeManifest(m));
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
}

export function newGeneration(): string {
  return randomBytes(12).toString('hex');
}
