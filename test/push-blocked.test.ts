// A type change that a job's edit blocks on the remote: the source turns directory `d` into a file while a job has
// changed `d/inner.txt` on the remote. skysync must not delete the job's work, so `d` cannot be placed: every push
// says so (and tries again, since the remote is not what the source says), and once the user moves the job's file
// away, as the message asks, the next push places `d` and a push after it moves nothing. `d` becomes a file or a
// symlink: a symlink has no recipe for the client to forget, and once was never sent again (seed 579985614 of
// push-property.test.ts).

import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNative } from '@skysync/chunking';
import { push } from '@skysync/engine';
import { LocalTarget } from '@skysync/transport';
import { scratchDir } from './helpers/scratch.js';

const native = loadNative()!;

const work = scratchDir('skysync-blocked-');
beforeAll(() => {
  process.env.SKYSYNC_STATE_DIR = path.join(work(), 'state');
});
afterAll(() => {
  delete process.env.SKYSYNC_STATE_DIR;
});

describe('push onto a type change a job blocks', () => {
  const cases = [
    { agent: 'native', into: 'file' },
    { agent: 'fallback', into: 'file' },
    { agent: 'native', into: 'symlink' },
    { agent: 'fallback', into: 'symlink' },
  ] as const;
  for (const { agent, into } of cases) {
    it(`keeps the job's file, retries until it is moved away, then converges (directory into a ${into}, ${agent} agent)`, async () => {
      if (agent === 'fallback') process.env.SKYSYNC_NO_NATIVE = '1';
      try {
        const src = path.join(work(), `src-${agent}-${into}`);
        const home = path.join(work(), `home-${agent}-${into}`);
        const dest = path.join(home, 'sky_workdir');
        const target = new LocalTarget('local:' + home, home);
        fs.mkdirSync(path.join(src, 'd'), { recursive: true });
        fs.writeFileSync(path.join(src, 'd', 'inner.txt'), 'placed\n');
        fs.writeFileSync(path.join(src, 'other.txt'), 'other\n');
        expect((await push({ source: src, target, native })).failed).toEqual([]);

        fs.writeFileSync(path.join(dest, 'd', 'inner.txt'), 'changed by a job\n');
        fs.rmSync(path.join(src, 'd'), { recursive: true });
        if (into === 'file') fs.writeFileSync(path.join(src, 'd'), 'now a file\n');
        else fs.symlinkSync('other.txt', path.join(src, 'd'));
        const blocked = await push({ source: src, target, native });
        expect(blocked.failed).toEqual([{ path: 'd', error: expect.stringMatching(/did not place; move them away/) }]);
        expect(blocked.kept).toEqual(['d/inner.txt']);
        expect(fs.readFileSync(path.join(dest, 'd', 'inner.txt'), 'utf8')).toBe('changed by a job\n');

        // Nothing changed in the source, but the remote still differs from it: the push tries `d` again rather
        // than remember it as placed (that would hide it from every later push once the way is clear).
        const again = await push({ source: src, target, native });
        expect(again.failed.map((f) => f.path)).toEqual(['d']);
        expect(again.filesChanged).toBe(1);
        expect(fs.readFileSync(path.join(dest, 'd', 'inner.txt'), 'utf8')).toBe('changed by a job\n');

        fs.rmSync(path.join(dest, 'd', 'inner.txt'));
        const cleared = await push({ source: src, target, native });
        expect(cleared.failed).toEqual([]);
        if (into === 'file') expect(fs.readFileSync(path.join(dest, 'd'), 'utf8')).toBe('now a file\n');
        else expect(fs.readlinkSync(path.join(dest, 'd'))).toBe('other.txt');
        expect(fs.readFileSync(path.join(dest, 'other.txt'), 'utf8')).toBe('other\n');

        const noop = await push({ source: src, target, native });
        expect(noop.failed).toEqual([]);
        expect(noop.filesChanged).toBe(0);
        expect(noop.bytesLiteral).toBe(0);
      } finally {
        delete process.env.SKYSYNC_NO_NATIVE;
      }
    });
  }
});
