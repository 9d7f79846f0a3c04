// shellQuote against a real sh: whatever it quotes, sh reads back byte for byte. Seeded (SKYSYNC_SEED replays a
// run; the seed is printed on failure).

import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { shellQuote } from '../src/shell.js';
import { Rng, seedFromEnv } from '../../../test/helpers/random.js';

/** Runs `printf %s WORD` in sh, the script given as bytes (one byte per char of the latin1 string). */
function echoBytes(word: string): Buffer {
  const r = spawnSync('sh', ['-s'], { input: Buffer.from(`printf %s ${word}`, 'latin1') });
  return r.stdout;
}

/** Strings that stress quoting: quotes, backslashes, expansions, globs, newlines, high bytes. */
function randomBytes(rng: Rng): Buffer {
  const tricky = Buffer.from(`'"\\$\`!*?[]{}~#&|;<>()= \t\n-%@:,.`, 'latin1');
  const n = rng.int(40);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = rng.chance(0.5) ? tricky[rng.int(tricky.length)]! : 1 + rng.int(255);
  return b;
}

describe('shellQuote', () => {
  it('leaves plain words bare and quotes the rest', () => {
    expect(shellQuote('/home/u/.ssh/known_hosts')).toBe('/home/u/.ssh/known_hosts');
    expect(shellQuote('[127.0.0.1]:2222')).toBe("'[127.0.0.1]:2222'");
    expect(shellQuote('')).toBe("''");
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(shellQuote('a=b')).toBe("'a=b'");
    expect(() => shellQuote('a\0b')).toThrow(/NUL/);
  });

  it('round-trips arbitrary bytes but NUL through sh', () => {
    const seed = seedFromEnv();
    const rng = new Rng(seed);
    const words = Array.from({ length: 300 }, () => randomBytes(rng));
    // One sh for many words: each printed, then a NUL as separator (a NUL never appears inside a word).
    const script = words.map((w) => `printf '%s\\0' ${shellQuote(w.toString('latin1'))}`).join('\n');
    const out = spawnSync('sh', ['-s'], { input: Buffer.from(script, 'latin1') }).stdout;
    const got = out.toString('latin1').split('\0').slice(0, -1);
    for (let i = 0; i < words.length; i++) {
      expect(got[i], `seed ${seed} (SKYSYNC_SEED=${seed} replays it), word ${JSON.stringify(words[i]!.toString('latin1'))}`).toBe(words[i]!.toString('latin1'));
    }
    expect(echoBytes(shellQuote("\xff\n'x"))).toEqual(Buffer.from("\xff\n'x", 'latin1'));
  });

  it('round-trips text through sh -c as UTF-8', () => {
    const seed = seedFromEnv();
    const rng = new Rng(seed);
    for (let i = 0; i < 50; i++) {
      const s = Array.from({ length: rng.int(20) }, () => rng.pick(["'", '"', '$', '\\', ' ', 'é', '日', '\n', '*', 'a', '`'])).join('');
      const r = spawnSync('sh', ['-c', `printf %s ${shellQuote(s)}`], { encoding: 'utf8' });
      expect(r.stdout, `seed ${seed} (SKYSYNC_SEED=${seed} replays it)`).toBe(s);
    }
  });
});
