// The progress board: rows fit the terminal, redraws leave nothing stale, logs get periodic lines, -q nothing.

import { describe, expect, it } from 'vitest';
import { ProgressBoard, fitTo, formatDuration, progressMode } from '../src/progress.js';
import { renderScreen } from './screen.js';

function fakeClock() {
  let t = 0;
  return {
    now: () => t,
    advance: (ms: number): void => {
      t += ms;
    },
  };
}

function sink(columns?: number) {
  const out = {
    text: '',
    columns,
    write: (s: string): void => {
      out.text += s;
    },
  };
  return out;
}

describe('progress board', () => {
  it('shows bytes, percent, rate and ETA per node, within 80 columns, and leaves nothing once finished', () => {
    const clock = fakeClock();
    const out = sink(80);
    const board = new ProgressBoard(out, 'tty', { now: clock.now });
    const MiB = 1 << 20;
    const nodes = ['a-very-long-cluster-name-head', 'a-very-long-cluster-name-worker1', 'a-very-long-cluster-name-worker2'];
    for (let s = 1; s <= 10; s++) {
      clock.advance(500);
      for (const [i, n] of nodes.entries()) board.bytes(n, `${n} file_mounts /data/some/long/mount/path`, s * (i + 1) * MiB, 40 * MiB);
      if (s === 5) board.note('warning: something to say while the board is up');
    }
    const mid = renderScreen(out.text, 80);
    expect(mid.widest).toBeLessThan(80);
    expect(mid.lines.length).toBe(4);
    expect(mid.lines[0]).toBe('warning: something to say while the board is up');
    expect(mid.lines[1]).toMatch(/^a-very-long-cluster-name-head .*…$/);
    const one = fakeClock();
    const shortOut = sink(80);
    const short = new ProgressBoard(shortOut, 'tty', { now: one.now, redrawMs: 0 });
    short.bytes('n', 'workdir', 0, 40 * MiB);
    one.advance(1000);
    short.bytes('n', 'workdir', 10 * MiB, 40 * MiB);
    expect(renderScreen(shortOut.text, 80).lines).toEqual(['workdir  10.0 MiB / 40.0 MiB   25%  10.0 MiB/s  ETA 0:03']);
    board.finish();
    expect(renderScreen(out.text, 80).lines).toEqual(['warning: something to say while the board is up']);
  });

  it("counts a bucket's objects beside its bytes, and the ETA waits for the objects when they are the slower part", () => {
    const clock = fakeClock();
    const out = sink(120);
    const board = new ProgressBoard(out, 'tty', { now: clock.now, redrawMs: 0 });
    const MiB = 1 << 20;
    board.bytes('0 m', 'file_mounts.~/data', 0, 100 * MiB, { done: 0, total: 1000, noun: 'objects+' });
    clock.advance(1000);
    // 90% of the bytes in 1 s (one large object), 10 of 1000 objects: 99 s of objects left, not 0.1 s of bytes.
    board.bytes('0 m', 'file_mounts.~/data', 90 * MiB, 100 * MiB, { done: 10, total: 1000, noun: 'objects' });
    expect(renderScreen(out.text, 120).lines).toEqual(['file_mounts.~/data  90.0 MiB / 100.0 MiB   90%  90.0 MiB/s  ETA 1:39  10 / 1000 objects']);
  });

  it('redraws fewer rows without leaving the old ones behind', () => {
    const clock = fakeClock();
    const out = sink(80);
    const board = new ProgressBoard(out, 'tty', { now: clock.now });
    board.status('a', 'a', 'scanning');
    clock.advance(200);
    board.status('b', 'b', 'scanning');
    clock.advance(200);
    board.finish();
    out.write('done\n');
    expect(renderScreen(out.text, 80).lines).toEqual(['done']);
  });

  it('writes a plain line every 2 s when not on a terminal, and nothing when quiet', () => {
    const clock = fakeClock();
    const out = sink();
    const board = new ProgressBoard(out, 'lines', { now: clock.now });
    for (let s = 1; s <= 10; s++) {
      clock.advance(500);
      board.bytes('n', 'workdir', s * 1000, 10_000);
    }
    const lines = out.text.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^workdir {2}3\.91 KiB \/ 9\.77 KiB {2} 40%/);
    expect(out.text).not.toMatch(/\x1b|\r/);
    const quiet = sink();
    const off = new ProgressBoard(quiet, 'off', { now: clock.now });
    off.bytes('n', 'workdir', 5, 10);
    off.note('x');
    off.finish();
    expect(quiet.text).toBe('x\n');
    expect(progressMode(true, { isTTY: true })).toBe('off');
    expect(progressMode(false, { isTTY: false })).toBe('lines');
  });

  it('formats durations and cuts lines', () => {
    expect(formatDuration(3)).toBe('0:03');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(Number.POSITIVE_INFINITY)).toBe('--:--');
    expect(fitTo('abcdef', 4)).toBe('abc…');
    expect(fitTo('abc', 4)).toBe('abc');
  });
});
