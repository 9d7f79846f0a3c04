// A node's plan from two trees: the saved one the node was left at and the one a scan of the source gives now.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNative, type NativeAddon } from '@skysync/chunking';
import type { DeleteMode, PushState } from '@skysync/protocol';
import { NodePlan, type Made } from '../src/plan-node.js';
import { prepareDir, type Prepared, type Tree } from '../src/prepare.js';
import type { SyncState } from '../src/state.js';

let native: NativeAddon;
let dir: string;
let before: Tree;
let prepared: Prepared;

async function prepare(base: Tree | null): Promise<Prepared> {
  const p = await prepareDir(dir, base, native, () => {}, null);
  await p.recipes.all;
  return p;
}

function planOf(o: { generation?: string | null; held?: number; drift?: string[]; inBase?: boolean; deleteMode?: DeleteMode; tree?: Tree } = {}): NodePlan {
  const remoteState: PushState = { generation: o.generation === undefined ? 'g1' : o.generation, drift: o.drift ?? [], dest: '/x', held: o.held ?? 4 };
  const state: SyncState = { generation: 'g1', treeId: null, tree: o.tree ?? before, watch: null, warning: null };
  return new NodePlan({ prepared, remoteState, state, inBase: o.inBase ?? true, deleteMode: o.deleteMode ?? 'placed', emit: () => {} });
}

const byPathOf = (made: Made[]) => new Map(made.map((m) => [m.entry.path, m.entry]));

beforeAll(async () => {
  // No watch service: these scans are full ones.
  process.env.SKYSYNC_WATCH_PERSIST = '0';
  native = loadNative()!;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-plan-'));
  const big = randomBytes(300 * 1024);
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.writeFileSync(path.join(dir, 'a.bin'), big);
  fs.writeFileSync(path.join(dir, 'b.txt'), 'gone soon\n');
  fs.writeFileSync(path.join(dir, 'sub/c.txt'), 'stays\n');
  // Racy timestamps would re-report files written within the same tick as the scan.
  const old = new Date(Date.now() - 60_000);
  for (const p of ['a.bin', 'b.txt', 'sub/c.txt', 'sub']) fs.utimesSync(path.join(dir, p), old, old);
  before = (await prepare(null)).tree;
  // The change since: a.bin grows at its end, b.txt goes, d.txt comes.
  fs.writeFileSync(path.join(dir, 'a.bin'), Buffer.concat([big, randomBytes(40 * 1024)]));
  fs.rmSync(path.join(dir, 'b.txt'));
  fs.writeFileSync(path.join(dir, 'd.txt'), 'new\n');
  prepared = await prepare(before);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('NodePlan', () => {
  it('sends a node left at the base only what changed, reusing the chunks it holds, in data mode', async () => {
    const plan = planOf();
    expect(plan.baseValid).toBe(true);
    expect(plan.dataMode).toBe(true);
    const made = await plan.next(false);
    const entries = byPathOf(made);
    expect([...entries.keys()].sort()).toEqual(['a.bin', 'b.txt', 'd.txt']);
    expect(entries.get('b.txt')).toMatchObject({ kind: 'delete', forgetOnly: false });
    const a = made.find((m) => m.entry.path === 'a.bin')!;
    // The old head of a.bin is copied from the remote's copy; only the new tail travels.
    expect(plan.chunksReused).toBeGreaterThan(0);
    const literal = a.literals.reduce((s, l) => s + l.len, 0);
    expect(literal).toBeGreaterThan(0);
    expect(literal).toBeLessThan(200 * 1024);
    expect(plan.filesChanged).toBe(2);
    expect(plan.filesDeleted).toBe(1);
    expect(plan.total).toBe(3);
    expect(await plan.next(false)).toEqual([]);
  });

  it('describes everything to a node whose state is unknown, and lets it say what it lacks (need mode)', async () => {
    const plan = planOf({ generation: 'other' });
    expect(plan.baseValid).toBe(false);
    expect(plan.dataMode).toBe(false);
    const entries = byPathOf(await plan.next(false));
    // Every entry of the new tree as added, plus what the node was last given and the source no longer has.
    const now = prepared.tree.entries().map((e) => e.path);
    expect([...entries.keys()].sort()).toEqual([...now, 'b.txt'].sort());
    expect(entries.get('sub/c.txt')).toMatchObject({ kind: 'file' });
    expect(entries.get('b.txt')).toMatchObject({ kind: 'delete' });
    // Nothing is known to be there: no chunk is reused from a previous version.
    expect(plan.chunksReused).toBe(0);
  });

  it('sends data at once to a node that holds nothing, even when its state is unknown', () => {
    expect(planOf({ generation: null, held: 0 }).dataMode).toBe(true);
  });

  it('sends back a file the remote changed (drift), and only forgets deletions with --no-delete', async () => {
    const drifted = planOf({ drift: ['sub/c.txt'] });
    const entries = byPathOf(await drifted.next(false));
    expect(entries.get('sub/c.txt')).toMatchObject({ kind: 'file' });
    expect(drifted.listed.find((l) => l.path === 'sub/c.txt')?.status).toBe('drifted');
    const keep = planOf({ deleteMode: 'none' });
    expect(byPathOf(await keep.next(false)).get('b.txt')).toMatchObject({ kind: 'delete', forgetOnly: true });
    expect(keep.filesDeleted).toBe(0);
  });

  it('makes entries in travel order, a batch at a time while streaming', async () => {
    const plan = planOf();
    const first = await plan.next(true);
    expect(first.length).toBeGreaterThan(0);
    const rest: Made[] = [];
    for (let b = await plan.next(true); b.length; b = await plan.next(true)) rest.push(...b);
    expect([...first, ...rest].map((m) => m.entry.path)).toEqual(['a.bin', 'b.txt', 'd.txt']);
  });

  it('plans a node left at a tree of its own (a failed or partial push) against that tree', async () => {
    // Left where the scan's base is, but not counted in it: the same changes as the base's nodes.
    const atBefore = planOf({ inBase: false });
    expect(atBefore.baseValid).toBe(true);
    expect([...byPathOf(await atBefore.next(false)).keys()].sort()).toEqual(['a.bin', 'b.txt', 'd.txt']);
    expect(atBefore.chunksReused).toBeGreaterThan(0);
    // Already at the scanned tree (pushed alone with --head-only): nothing at all.
    const atNow = planOf({ inBase: false, tree: prepared.tree });
    expect(await atNow.next(false)).toEqual([]);
    expect(atNow.filesChanged).toBe(0);
    // A file whose push failed there was forgotten: it travels again, and only it.
    const forgot = await prepare(before);
    forgot.tree.forget('sub/c.txt');
    const again = planOf({ inBase: false, tree: forgot.tree });
    expect([...byPathOf(await again.next(false)).keys()]).toEqual(['sub/c.txt']);
  });
});
