// ISSUE22 defect 1: a job on the node swaps a directory inside the destination for a symlink to somewhere else
// while a sync applies. Nothing may ever be written outside the destination, and no temp file may stay behind.
// A racer process swaps `d` (mv d d.old; ln -s OUTSIDE d; and back) as fast as it can while syncs write below it.
// Seeded: SKYSYNC_SEED replays a run; SKYSYNC_RACE_ROUNDS sets the rounds.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { PlanEntry } from '@skysync/protocol';
import { Rng, seedFromEnv } from '../../../test/helpers/random.js';
import { leftovers, listAll, sync, tempDir, withBytes } from './helpers.js';

const ROUNDS = Number(process.env.SKYSYNC_RACE_ROUNDS ?? 30);

const RACER = `
const fs = require('fs');
const [root, outside] = process.argv.slice(1);
const d = root + '/d', old = root + '/d.old';
let said = false;
for (;;) {
  try {
    fs.renameSync(d, old);
    fs.symlinkSync(outside, d);
    if (!said) { process.stdout.write('go\\n'); said = true; }
    fs.unlinkSync(d);
    fs.renameSync(old, d);
  } catch {
    try { fs.unlinkSync(d); } catch {}
    try { fs.renameSync(old, d); } catch {}
    try { fs.mkdirSync(d); } catch {}
  }
}`;

let racer: ChildProcess | null = null;
afterEach(() => {
  racer?.kill('SIGKILL');
  racer = null;
});

async function startRacer(root: string, outside: string): Promise<void> {
  racer = spawn(process.execPath, ['-e', RACER, root, outside], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => racer!.stdout!.once('data', () => resolve()));
}

function plan(rng: Rng, round: number): PlanEntry[] {
  const entries: PlanEntry[] = [{ kind: 'dir', path: 'd', mode: 0o755 }];
  for (const sub of ['d', 'd/s', 'd/s/t']) {
    if (sub !== 'd') entries.push({ kind: 'dir', path: sub, mode: rng.pick([0o755, 0o700]) });
    for (let i = 0, n = 5 + rng.int(20); i < n; i++) {
      const size = rng.chance(0.1) ? (1 << 20) + rng.int(1 << 20) : rng.int(3000);
      entries.push(withBytes(`${sub}/f${round}-${i}`, rng.bytes(size)));
    }
    entries.push({ kind: 'symlink', path: `${sub}/l${round}`, target: 'somewhere' });
  }
  return entries;
}

describe('a directory swapped for a symlink while a sync applies', () => {
  for (const writer of ['batch writer', 'one by one'] as const) {
    it(`never writes outside the destination (${writer}, seeded)`, async () => {
      const seed = seedFromEnv();
      const rng = new Rng(seed);
      const root = tempDir('race');
      const outside = tempDir('race-outside');
      fs.mkdirSync(path.join(root, 'd'));
      await startRacer(root, outside);
      let escaped: string[] = [];
      let left: string[] = [];
      let round = 0;
      try {
        for (; round < ROUNDS && !escaped.length && !left.length; round++) {
          await sync(root, plan(rng, round), { over: writer === 'one by one' ? { native: null } : {} });
          escaped = listAll(outside);
          left = leftovers(root);
        }
      } finally {
        racer?.kill('SIGKILL');
      }
      const why = `seed ${seed} (SKYSYNC_SEED=${seed} replays it), round ${round}`;
      expect(escaped, `written outside: ${why}`).toEqual([]);
      expect(left, `temp files left: ${why}`).toEqual([]);
    });
  }
});
