import { describe, expect, it } from 'vitest';
import { comparePaths, travelOrder } from '../src/order.js';
import { rescanOf } from '../src/prepare.js';
import { chooseBase } from '../src/push.js';

const MiB = 1024 * 1024;
const item = (path: string, size?: number) => ({ path, size });

describe('travelOrder', () => {
  it('keeps path order when there is no large file, or only large ones', () => {
    const small = [item('a', 10), item('b'), item('c', 5 * MiB)];
    expect(travelOrder(small)).toEqual(small);
    const large = [item('a', 8 * MiB), item('b', 9 * MiB)];
    expect(travelOrder(large)).toEqual(large);
  });

  it('sends the last large file last and spreads small files between the others by their share of the work', () => {
    const items = [item('L1', 64 * MiB), item('L2', 64 * MiB), item('L3', 10 * MiB), ...Array.from({ length: 8 }, (_, i) => item(`s${i}`, 1000))];
    const out = travelOrder(items);
    expect(out.map((x) => x.path).sort()).toEqual(items.map((x) => x.path).sort());
    // The last large file in path order goes last; small files go before it, all of them.
    expect(out[out.length - 1]!.path).toBe('L3');
    // Small files start the stream (none done yet), and some of them wait until a large file has gone.
    expect(out[0]!.path).toBe('s0');
    const firstLarge = out.findIndex((x) => x.path === 'L1');
    const secondLarge = out.findIndex((x) => x.path === 'L2');
    expect(firstLarge).toBeGreaterThan(0);
    expect(out.slice(firstLarge + 1, secondLarge).some((x) => x.path.startsWith('s'))).toBe(true);
    // Each kind keeps its own path order.
    expect(out.filter((x) => x.path.startsWith('s')).map((x) => x.path)).toEqual(items.filter((x) => x.path.startsWith('s')).map((x) => x.path));
    expect(out.filter((x) => x.path.startsWith('L')).map((x) => x.path)).toEqual(['L1', 'L2', 'L3']);
  });

  it('puts a single large file after every small one', () => {
    const out = travelOrder([item('big', 100 * MiB), item('x', 1), item('y', 2)]);
    expect(out.map((x) => x.path)).toEqual(['x', 'y', 'big']);
  });
});

describe('comparePaths', () => {
  it('orders by raw bytes (latin1), not by locale', () => {
    const paths = ['b', 'a/b', 'a', 'B', '\xe9', 'a-b'];
    expect([...paths].sort(comparePaths)).toEqual(['B', 'a', 'a-b', 'a/b', 'b', '\xe9']);
  });
});

describe('rescanOf', () => {
  it('lists the watched directories plus the parents of what the last scan warned about, and walks those whole', () => {
    const r = rescanOf({ dirs: ['src'], subtrees: ['new'] }, ['lib/bad.cfg', 'top.fifo']);
    expect(r.dirs).toEqual(['src', 'lib', '']);
    expect(r.subtrees).toEqual(['new', 'lib/bad.cfg', 'top.fifo']);
  });
});

describe('chooseBase', () => {
  const tree = {} as never;
  it('takes the tree most nodes share, ties to the first node with a tree', () => {
    expect(
      chooseBase([
        { tree: null, treeId: null },
        { tree, treeId: 'x' },
        { tree, treeId: 'y' },
        { tree, treeId: 'y' },
      ]),
    ).toBe(2);
    expect(
      chooseBase([
        { tree: null, treeId: null },
        { tree, treeId: 'x' },
        { tree, treeId: 'y' },
      ]),
    ).toBe(1);
    expect(
      chooseBase([
        { tree: null, treeId: null },
        { tree: null, treeId: null },
      ]),
    ).toBe(0);
  });
});
