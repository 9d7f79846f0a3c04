// The CLI's argument handling: commander's parsing into the flags the commands take, and the exit code of a
// usage error (nothing connects in any of these).

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Command } from 'commander';
import { buildProgram, run, splitRemote } from '../src/main.js';
import { commandWithoutDashes, deleteMode, nodeSelection, type SyncFlags } from '../src/commands.js';
import { EXIT, UsageError } from '../src/exit-codes.js';

/** Parses `argv` with the real program, catching what the command's action would have been given. */
async function parsed(argv: string[]): Promise<{ args: unknown[]; flags: SyncFlags }> {
  const program = buildProgram();
  let got: { args: unknown[]; flags: SyncFlags } | null = null;
  for (const c of program.commands as Command[]) {
    c.action((...a: unknown[]) => {
      // commander passes the positional arguments, then the options, then the command.
      const args = a.slice(0, -2);
      got = { args, flags: a[a.length - 2] as SyncFlags };
    });
  }
  await program.parseAsync(argv, { from: 'user' });
  return got!;
}

let stderr: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
});
afterEach(() => {
  stderr.mockRestore();
  process.exitCode = undefined;
});

describe('flags', () => {
  it('gives push its defaults', async () => {
    const { args, flags } = await parsed(['push', 'dev']);
    expect(args).toEqual(['dev', undefined]);
    expect(flags.dest).toBe('~/sky_workdir');
    expect(flags.transport).toBe('auto');
    expect(flags.relay).toBe(true);
    expect(flags.delete).toBeUndefined();
    expect(deleteMode(flags)).toBe('placed');
  });

  it('maps --delete, --no-delete and the rest of the cluster options', async () => {
    expect(deleteMode((await parsed(['push', 'dev', '--delete'])).flags)).toBe('mirror');
    expect(deleteMode((await parsed(['push', 'dev', '--no-delete'])).flags)).toBe('none');
    const { args, flags } = await parsed([
      'exec',
      'dev',
      't.yaml',
      '-n',
      '--json',
      '--no-relay',
      '--transport',
      'rsync',
      '--env',
      'A=1',
      '--env',
      'B',
      '-w',
      'proj',
      '--dest',
      '/tmp/x',
      '--file-mounts',
    ]);
    expect(args).toEqual(['dev', 't.yaml', []]);
    expect(flags).toMatchObject({ dryRun: true, json: true, relay: false, transport: 'rsync', env: ['A=1', 'B'], workdir: 'proj', dest: '/tmp/x', fileMounts: true });
    expect((await parsed(['launch', 'dev', 't.yaml', '--no-setup'])).flags.setup).toBe(false);
  });

  it('turns --nodes into the node list, the first being the head', async () => {
    const { flags } = await parsed(['push', 'dev', '--nodes', 'dev, dev-worker2 ,,dev-worker1']);
    expect(nodeSelection(flags)).toEqual({ headOnly: undefined, nodes: ['dev', 'dev-worker2', 'dev-worker1'] });
    expect(nodeSelection({ headOnly: true })).toEqual({ headOnly: true });
    expect(() => nodeSelection({ nodes: ' , ' })).toThrow(UsageError);
  });

  it('splits TARGET:PATH, keeping local:DIR whole', () => {
    expect(splitRemote('dev:~/sky_workdir/out')).toEqual({ target: 'dev', path: '~/sky_workdir/out' });
    expect(splitRemote('local:/tmp/node:sky_workdir/out')).toEqual({ target: 'local:/tmp/node', path: 'sky_workdir/out' });
    expect(() => splitRemote('dev')).toThrow(UsageError);
  });
});

describe('exit codes', () => {
  const said = (): string => stderr.mock.calls.map((c: unknown[]) => String(c[0])).join('');

  it('exits 2 for what commander refuses: an unknown option, a bad choice, a missing argument', async () => {
    expect(await run(['push', 'dev', '--bogus'])).toBe(EXIT.usage);
    expect(await run(['push', 'dev', '--transport', 'carrier-pigeon'])).toBe(EXIT.usage);
    expect(said()).toMatch(/carrier-pigeon/);
    expect(await run(['launch', 'dev'])).toBe(EXIT.usage);
    expect(await run(['no-such-command'])).toBe(EXIT.usage);
  });

  it('exits 2 with one line for a command that cannot mean anything', async () => {
    expect(await run(['exec', 'dev'])).toBe(EXIT.usage);
    expect(said()).toMatch(/skysync: nothing to run/);
    expect(await run(['pull', 'dev', './x'])).toBe(EXIT.usage);
    expect(said()).toMatch(/expected TARGET:PATH/);
  });

  it('exits 2 for a bad setting before anything connects', async () => {
    const saved = process.env.SKYSYNC_COMPRESS_LEVEL;
    process.env.SKYSYNC_COMPRESS_LEVEL = '42';
    try {
      expect(await run(['push', 'dev'])).toBe(EXIT.usage);
      expect(said()).toMatch(/SKYSYNC_COMPRESS_LEVEL=42/);
    } finally {
      if (saved === undefined) delete process.env.SKYSYNC_COMPRESS_LEVEL;
      else process.env.SKYSYNC_COMPRESS_LEVEL = saved;
    }
  });

  it('exits 0 for --help and --version', async () => {
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      expect(await run(['--version'])).toBe(EXIT.ok);
      expect(await run(['push', '--help'])).toBe(EXIT.ok);
    } finally {
      stdout.mockRestore();
    }
  });
});

describe('exec with a command and no --', () => {
  const files = new Set(['task.yaml']);
  const rewrite = (argv: string[]) => commandWithoutDashes(argv, (p) => files.has(p));
  it('a word after the target that is not an existing YAML file starts the command, its options its own', () => {
    expect(rewrite(['exec', 'c1', 'python3', '-V'])).toEqual(['exec', 'c1', '--', 'python3', '-V']);
    expect(rewrite(['-F', 'cfg', 'exec', '--nodes', 'a,b', 'c1', 'python3', 'train.py'])).toEqual(['-F', 'cfg', 'exec', '--nodes', 'a,b', 'c1', '--', 'python3', 'train.py']);
    expect(rewrite(['exec', 'c1', 'task.yaml', '--env', 'A=1'])).toEqual(['exec', 'c1', 'task.yaml', '--env', 'A=1']);
    expect(rewrite(['exec', 'c1', 'task.yaml', 'echo', 'x'])).toEqual(['exec', 'c1', 'task.yaml', '--', 'echo', 'x']);
    expect(rewrite(['exec', 'c1', '--', 'ls', '-l'])).toEqual(['exec', 'c1', '--', 'ls', '-l']);
    expect(rewrite(['push', 'c1', 'x'])).toEqual(['push', 'c1', 'x']);
  });
});
