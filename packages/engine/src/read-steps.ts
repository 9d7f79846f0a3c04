// Reading the literal bytes a batch of entries carries: large files by the data pump, small ones in groups by
// the addon, ahead of the one being sent.

import { READ_RANGE, writeReadRange, type NativeAddon } from '@skysync/chunking';
import type { PlanEntry } from '@skysync/protocol';
import type { LiteralRef } from './plan.js';

/** Files up to this size have their literal bytes read in batches by the addon. */
const SMALL_READ = 256 * 1024;
/** Bytes per batched read, and batches read ahead of the one being sent. */
const READ_GROUP_BYTES = 8 * 1024 * 1024;
const READS_AHEAD = 2;

export type ReadStep<M> = { kind: 'file'; made: M } | { kind: 'group'; files: M[]; bytes: Promise<Buffer> };

/**
 * The order in which a batch's literal bytes are read: large files one by one (sequential reads of a big file
 * are cheap), runs of small files as one native read each, started up to `READS_AHEAD` groups ahead.
 */
export function* readSteps<M extends { entry: PlanEntry; literals: LiteralRef[] }>(batch: M[], native: NativeAddon | null, root: string): Generator<ReadStep<M>> {
  if (!native) {
    for (const made of batch) yield { kind: 'file', made };
    return;
  }
  const small = (m: M): boolean => m.entry.kind === 'file' && m.entry.size <= SMALL_READ && m.literals.length > 0;
  // Plan the steps first, so reads can start ahead of the one being consumed.
  type Planned = { kind: 'file'; made: M } | { kind: 'group'; files: M[]; size: number };
  const planned: Planned[] = [];
  for (const m of batch) {
    if (!small(m)) {
      planned.push({ kind: 'file', made: m });
      continue;
    }
    const size = m.literals.reduce((a, l) => a + l.len, 0);
    const last = planned[planned.length - 1];
    if (last?.kind === 'group' && last.size + size <= READ_GROUP_BYTES) {
      last.files.push(m);
      last.size += size;
    } else planned.push({ kind: 'group', files: [m], size });
  }
  const reads = new Map<number, Promise<Buffer>>();
  const start = (i: number): void => {
    const g = planned[i];
    if (g?.kind !== 'group' || reads.has(i)) return;
    const paths: string[] = [];
    const ranges = Buffer.alloc(READ_RANGE.size * g.files.reduce((a, m) => a + m.literals.length, 0));
    let k = 0;
    for (const m of g.files) {
      for (const l of m.literals) {
        paths.push(m.entry.path);
        writeReadRange(ranges, k, l.offset, l.len);
        k++;
      }
    }
    const p = native.readRanges(root, paths.join('\0'), ranges).catch((e: Error) => {
      throw new Error(`${e.message}; push again`);
    });
    p.catch(() => {});
    reads.set(i, p);
  };
  const groups = planned.flatMap((g, i) => (g.kind === 'group' ? [i] : []));
  for (let i = 0; i < planned.length; i++) {
    const g = planned[i]!;
    if (g.kind === 'file') {
      yield g;
      continue;
    }
    const at = groups.indexOf(i);
    for (let j = at; j < Math.min(groups.length, at + 1 + READS_AHEAD); j++) start(groups[j]!);
    yield { kind: 'group', files: g.files, bytes: reads.get(i)! };
    reads.delete(i);
  }
}
