// Help lists the environment each command honours and its exit codes, and fits the terminal.

import { CommanderError } from 'commander';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { buildProgram } from '../src/main.js';
import { wrapText } from '../src/help.js';

/** Everything `skysync <words> --help` prints, at a terminal of `columns`. */
async function help(words: string[], columns?: number): Promise<string> {
  const was = Object.getOwnPropertyDescriptor(process.stdout, 'columns');
  Object.defineProperty(process.stdout, 'columns', { value: columns, configurable: true });
  let text = '';
  const write = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    text += String(s);
    return true;
  });
  try {
    await buildProgram().parseAsync([...words, '--help'], { from: 'user' });
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
  } finally {
    write.mockRestore();
    if (was) Object.defineProperty(process.stdout, 'columns', was);
    else delete (process.stdout as { columns?: number }).columns;
  }
  return text;
}

afterEach(() => vi.restoreAllMocks());

const longest = (text: string): number => Math.max(...text.split('\n').map((l) => l.length));

describe('help', () => {
  it('lists the environment variables a command honours, and only those', async () => {
    const push = await help(['push']);
    for (const v of [
      'SKYSYNC_CONTROL_PERSIST',
      'SKYSYNC_WATCH_PERSIST',
      'SKYSYNC_LANES',
      'SKYSYNC_COMPRESS_LEVEL',
      'SKYSYNC_SSH_CONFIG',
      'SKYSYNC_RELAY ',
      'SKYSYNC_RELAY_ADDRESSES',
    ]) {
      expect(push).toContain(v);
    }
    const disconnect = await help(['disconnect']);
    expect(disconnect).toMatch(/Environment:\n {2}SKYSYNC_SSH_CONFIG/);
    expect(disconnect).not.toContain('SKYSYNC_LANES');
    expect(await help(['storage', 'delete'])).toContain('SKYSYNC_GCS_ENDPOINT');
  });

  it("lists the exit codes: 3 for a partial sync, the job's own for exec", async () => {
    const push = await help(['push']);
    expect(push).toMatch(/Exit codes:\n {2}0 {2}success\n {2}1 {2}.*\n {2}2 {2}.*\n {2}3 {2}partly/);
    expect(await help(['exec'])).toMatch(/ {2}N {2}the command's own exit code/);
    expect(await help(['pull'])).toMatch(/ {2}3 {2}partly: some files could not be read on the remote/);
    expect(await help(['jobs'])).toContain('Exit codes:');
  });

  it('wraps to the terminal: 80 columns by default, narrower when the terminal is', async () => {
    for (const words of [['push'], ['exec'], ['launch'], ['pull'], ['disconnect'], ['logs'], ['storage', 'delete']]) {
      expect(longest(await help(words)), words.join(' ')).toBeLessThanOrEqual(80);
      expect(longest(await help(words, 60)), words.join(' ')).toBeLessThanOrEqual(60);
    }
    expect(longest(await help(['push'], 160))).toBeGreaterThan(80);
  });

  it('reflows paragraphs and hangs an indented line under its second column', () => {
    expect(wrapText('one two three\nfour five', 9)).toBe('one two\nthree\nfour five');
    expect(wrapText('  cmd  alpha beta gamma', 16)).toBe('  cmd  alpha\n       beta\n       gamma');
  });
});
