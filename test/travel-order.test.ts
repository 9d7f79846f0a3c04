// The order entries travel in (engine `travelOrder`), on seeded random file lists: a permutation that keeps path
// order within small and within large files, spreads the small ones between the large ones by their share of the
// work, and ends with the last large file.

import { describe, expect, it } from 'vitest';
import { travelOrder } from '../packages/engine/src/order.js';
import { Rng, seedFromEnv } from './helpers/random.js';

const MiB = 1024 * 1024;

function files(seed: number): Array<{ path: string; size: number }> {
  const r = new Rng(seed);
  return Array.from({ length: 1 + r.int(400) }, (_, k) => ({
    path: `d${r.int(9)}/f${String(k).padStart(4, '0')}`,
    size: r.chance(0.05) ? 8 * MiB + r.int(300 * MiB) : r.int(256 * 1024),
  })).sort((a, b) => (a.path < b.path ? -1 : 1));
}

describe('travelOrder', () => {
  it('keeps every entry and each kind in path order, spreads small files, and ends with a large file', () => {
    const seed0 = seedFromEnv(20261128);
    for (let k = 0; k < 300; k++) {
      const seed = seed0 + k;
      try {
        const items = files(seed);
        const out = travelOrder(items);
        expect([...out].sort((a, b) => (a.path < b.path ? -1 : 1))).toEqual(items);
        const isLarge = (x: { size: number }): boolean => x.size >= 8 * MiB;
        expect(out.filter(isLarge)).toEqual(items.filter(isLarge));
        expect(out.filter((x) => !isLarge(x))).toEqual(items.filter((x) => !isLarge(x)));
        const large = items.filter(isLarge);
        if (large.length === 0 || large.length === items.length) {
          expect(out).toEqual(items);
          continue;
        }
        expect(out[out.length - 1]).toBe(large[large.length - 1]);
        // Before each large file but the last, the small files sent so far are about the share of the large
        // work done so far (within one small file's weight).
        const smallWeight = (x: { size: number }): number => x.size + 16 * 1024;
        const smallTotal = items.filter((x) => !isLarge(x)).reduce((a, x) => a + smallWeight(x), 0);
        const largeTotal = large.slice(0, -1).reduce((a, x) => a + x.size, 0);
        let smallDone = 0;
        let largeDone = 0;
        for (const x of out.slice(0, -1)) {
          if (isLarge(x)) {
            expect(smallDone / smallTotal).toBeGreaterThanOrEqual(largeDone / largeTotal - 1e-9);
            expect(smallDone / smallTotal).toBeLessThanOrEqual(largeDone / largeTotal + (256 * 1024 + 16 * 1024) / smallTotal + 1e-9);
            largeDone += x.size;
          } else smallDone += smallWeight(x);
        }
      } catch (e) {
        throw new Error(`seed ${seed} (SKYSYNC_SEED=${seed} reproduces it first): ${(e as Error).message}`);
      }
    }
  });
});
