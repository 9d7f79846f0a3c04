// The one owner of a command's sessions: who opens, and who releases or closes, by node.

import { describe, expect, it } from 'vitest';
import type { Target } from '@skysync/transport';
import { NodeSessions, defaultCompression } from '../src/node-sessions.js';

/** A target whose agent never answers: opening fails with `why`. */
function unreachable(spec: string, why: string): Target {
  return {
    spec,
    key: spec,
    kind: 'ssh',
    openAgent: async () => {
      throw new Error(why);
    },
  } as unknown as Target;
}

describe('NodeSessions', () => {
  it('offers no compression to a local agent and zstd first to a remote one', () => {
    expect(defaultCompression({ kind: 'local' } as Target)).toEqual(['none']);
    expect(defaultCompression({ kind: 'ssh' } as Target)[0]).toBe('zstd');
    const s = new NodeSessions([{ kind: 'ssh' } as Target], { compression: ['deflate'] });
    expect(s.compressionFor(0)).toEqual(['deflate']);
  });

  it('reports a node that cannot be opened once, by its index in the whole command, and fails its operations', async () => {
    const failed: Array<[number, string]> = [];
    const all = new NodeSessions([unreachable('h', 'down'), unreachable('w1', 'refused'), unreachable('w2', 'gone')], {
      onOpenError: (i, e) => failed.push([i, e.message]),
    });
    const view = all.subset([2, 1]);
    const first = view.acquire(0);
    expect(first.carriesBegin).toBe(true);
    await expect(first.session).rejects.toThrow('gone');
    // A second operation shares the attempt: no new open, and it sends its own begin.
    const again = view.acquire(0);
    expect(again.carriesBegin).toBe(false);
    await expect(again.session).rejects.toThrow('gone');
    expect(failed).toEqual([[2, 'gone']]);
    expect(await all.settled(2)).toBeNull();
  });

  it('settles nodes never opened as null once opening stops, and finish waits for nothing more', async () => {
    const s = new NodeSessions([unreachable('a', 'x'), unreachable('b', 'y')]);
    s.stopOpening();
    expect(await s.all()).toEqual([null, null]);
    // Nothing opened: a later acquire does not open either.
    await expect(s.acquire(0).session).rejects.toThrow(/no session with a/);
    await s.finish(() => true);
  });

  it('releases the sessions whose operations completed and closes the others', async () => {
    const ended: string[] = [];
    const fake = (spec: string) => ({
      spec,
      key: spec,
      kind: 'ssh',
      openAgent: async () => {
        throw new Error('unused');
      },
    });
    const s = new NodeSessions([fake('a'), fake('b')] as unknown as Target[]);
    // Stand-ins for opened sessions, put where an open would have left them.
    const session = (name: string) => ({ release: async () => void ended.push(`${name} released`), close: async () => void ended.push(`${name} closed`) });
    const slots = (s as unknown as { slots: Array<{ started: boolean; opened: { resolve: (v: unknown) => void } }> }).slots;
    slots.forEach((slot, i) => {
      slot.started = true;
      slot.opened.resolve(session(i === 0 ? 'a' : 'b'));
    });
    await s.finish((i) => i === 0);
    expect(ended.sort()).toEqual(['a released', 'b closed']);
  });
});
