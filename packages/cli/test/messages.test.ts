// Messages: the overwritten files named, --dest expanded by the local shell, help without `(default: [])`.

import { describe, expect, it } from 'vitest';
import { overwrittenNote, remoteDest } from '../src/commands.js';
import { buildProgram } from '../src/main.js';

describe('messages', () => {
  it('names the first few overwritten files, then a count', () => {
    expect(overwrittenNote(['a.py'])).toBe('1 file changed on the remote was overwritten with your local version: a.py');
    expect(overwrittenNote(['a', 'b', 'c', 'd', 'e'])).toBe('5 files changed on the remote were overwritten with your local version: a, b, c and 2 more');
  });

  it('maps a --dest the local shell expanded to the remote home, with a note', () => {
    const said: string[] = [];
    expect(remoteDest('/home/me/x', (l) => said.push(l), '/home/me')).toBe('~/x');
    expect(remoteDest('/home/me', (l) => said.push(l), '/home/me')).toBe('~');
    expect(said[0]).toMatch(/^note: --dest \/home\/me\/x is your local home; taking it as ~\/x on the remote/);
    expect(remoteDest('~/x', (l) => said.push(l), '/home/me')).toBe('~/x');
    expect(remoteDest('/home/meow/x', (l) => said.push(l), '/home/me')).toBe('/home/meow/x');
    expect(remoteDest('/tmp/x', (l) => said.push(l), '/')).toBe('/tmp/x');
    expect(said).toHaveLength(2);
  });

  it('help shows no (default: []) for repeatable options', () => {
    for (const name of ['push', 'exec', 'launch']) {
      const c = buildProgram().commands.find((x) => x.name() === name)!;
      const help = c.helpInformation();
      expect(help).toContain('--env <K=V>');
      expect(help).not.toContain('(default: [])');
    }
  });
});
