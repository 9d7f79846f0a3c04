import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseDotenv, parseEnvAssignments, parseTask, TaskError } from '../src/index.js';
import { makeSandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(() => {
  sb = makeSandbox();
});
afterAll(() => sb.cleanup());

describe('parseEnvAssignments', () => {
  const saved = process.env.SKYSYNC_TEST_VAR;
  afterEach(() => {
    if (saved === undefined) delete process.env.SKYSYNC_TEST_VAR;
    else process.env.SKYSYNC_TEST_VAR = saved;
  });

  it('splits K=V at the first "=" and keeps empty values', () => {
    expect(parseEnvAssignments(['A=1', 'URL=postgres://u:p@h/db?x=y', 'EMPTY=', 'B=two words'])).toEqual({
      A: '1',
      URL: 'postgres://u:p@h/db?x=y',
      EMPTY: '',
      B: 'two words',
    });
  });

  it('a later assignment wins', () => {
    expect(parseEnvAssignments(['A=1', 'A=2'])).toEqual({ A: '2' });
  });

  it('K alone takes the local environment', () => {
    process.env.SKYSYNC_TEST_VAR = 'from-shell';
    expect(parseEnvAssignments(['SKYSYNC_TEST_VAR'])).toEqual({ SKYSYNC_TEST_VAR: 'from-shell' });
  });

  it('K alone and unset is an error saying what to do', () => {
    delete process.env.SKYSYNC_TEST_VAR;
    expect(() => parseEnvAssignments(['SKYSYNC_TEST_VAR'])).toThrow(
      new TaskError('--env SKYSYNC_TEST_VAR: not set in the local environment; export SKYSYNC_TEST_VAR first or pass --env SKYSYNC_TEST_VAR=VALUE'),
    );
  });

  it('bad forms are one-line errors that never echo the value', () => {
    const bad = (item: string): string => {
      try {
        parseEnvAssignments([item]);
      } catch (e) {
        expect(e).toBeInstanceOf(TaskError);
        return (e as Error).message;
      }
      throw new Error(`no error for ${item}`);
    };
    expect(bad('=secret-value')).toBe('--env: "=..." has no variable name; write --env NAME=VALUE');
    expect(bad('')).toBe('--env: "" has no variable name; write --env NAME=VALUE');
    const m = bad('MY-TOKEN=hunter2');
    expect(m).toBe('--env "MY-TOKEN": not a valid environment variable name; use letters, digits and "_", not starting with a digit');
    expect(m).not.toContain('hunter2');
  });

  it('an invalid override name passed to parseTask is reported as --env', () => {
    expect(() => parseTask('run: x\n', 't.yaml', { env: { 'a-b': '1' } })).toThrow(/^--env "a-b": not a valid environment variable name; /);
  });
});

describe('envs and secrets', () => {
  const parse = (yaml: string, opts: { env?: Record<string, string>; secrets?: Record<string, string> } = {}) => parseTask(yaml, 't.yaml', { cwd: sb.root, ...opts });

  it('values are strings as written in the YAML', () => {
    const t = parse(
      'envs:\n  INT: 1\n  BOOL: true\n  ON: on\n  OCT: 0755\n  HEX: 0x1F\n  SEXA: 1:30\n  FLOAT: 1.50\n  EXP: 1e-4\n  DATE: 2024-01-01\n  QUOTED: "007"\n  EMPTY: ""\n  TILDE_STR: "~"\n',
    );
    expect(t.envs).toEqual({
      INT: '1',
      BOOL: 'true',
      ON: 'on',
      OCT: '0755',
      HEX: '0x1F',
      SEXA: '1:30',
      FLOAT: '1.50',
      EXP: '1e-4',
      DATE: '2024-01-01',
      QUOTED: '007',
      EMPTY: '',
      TILDE_STR: '~',
    });
  });

  it('--env wins over envs: and may add new names', () => {
    const t = parse('envs:\n  A: yaml\n  B: null\n', { env: { A: 'cli', B: 'filled', C: 'new' } });
    expect(t.envs).toEqual({ A: 'cli', B: 'filled', C: 'new' });
  });

  it('secrets follow the same rules, with --secret overrides', () => {
    const t = parse('secrets:\n  HF_TOKEN: null\n  PORT: 8080\n', { secrets: { HF_TOKEN: 'hf_abc' } });
    expect(t.secrets).toEqual({ HF_TOKEN: 'hf_abc', PORT: '8080' });
    expect(t.envs).toEqual({});
  });

  it('secrets are not substituted into paths, so they never reach messages or logs', () => {
    const t = parse('secrets:\n  TOKEN: s3cr3t\nenvs:\n  DIR: data\nfile_mounts:\n  /a/$TOKEN: ./$DIR\n');
    expect(t.fileMounts[0]).toMatchObject({ dest: '/a/$TOKEN', source: `${sb.root}/data` });
    let message = '';
    try {
      parse('secrets:\n  TOKEN: s3cr3t\n  bad-name: s3cr3t\n');
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain('secrets.bad-name');
    expect(message).not.toContain('s3cr3t');
    expect(() => parse('secrets: s3cr3t\n')).toThrow('t.yaml: secrets: expected a mapping of NAME: value, got a single value; write one "NAME: value" per line under it');
  });
});

describe('substitution', () => {
  const dests = (yaml: string, env: Record<string, string> = {}): string[] => parseTask(`file_mounts:\n${yaml}`, 't.yaml', { cwd: sb.root, env }).fileMounts.map((m) => m.dest);

  it('$VAR and ${VAR}; unknown names stay as written', () => {
    expect(dests('  /a/$X/${Y}/$NOPE/${NOPE2}: ./data\n', { X: 'x', Y: 'y' })).toEqual(['/a/x/y/$NOPE/${NOPE2}']);
  });

  it("follows SkyPilot's pattern: a name runs to the last word character, a stray brace is consumed", () => {
    expect(dests('  /a/$X_suffix: ./data\n  /b/${X}_suffix: ./data\n  /c/$X}: ./data\n', { X: 'x', X_suffix: 'long' })).toEqual(['/a/long', '/b/x_suffix', '/c/x']);
  });

  it('applies to storage name and every source, not to setup/run', () => {
    const t = parseTask('envs:\n  B: bkt\n  D: data\nfile_mounts:\n  /o:\n    name: $B-out\n    source: [./$D, ./file.txt]\n    mode: copy\nrun: echo $B\n', 't.yaml', {
      cwd: sb.root,
    });
    expect(t.fileMounts[0]).toMatchObject({ name: 'bkt-out', sources: [`${sb.root}/data`, `${sb.root}/file.txt`] });
    expect(t.run).toBe('echo $B');
  });

  it('two keys that name the same place after substitution keep the last one, as SkyPilot does', () => {
    const t = parseTask('envs:\n  X: b\nfile_mounts:\n  /a/$X: ./data\n  /a/b: ./file.txt\n', 't.yaml', { cwd: sb.root });
    expect(t.fileMounts).toHaveLength(1);
    expect(t.fileMounts[0]).toMatchObject({ dest: '/a/b', source: `${sb.root}/file.txt`, sourceType: 'file' });
  });
});

describe('reading YAML like PyYAML', () => {
  it('a repeated key keeps the last value', () => {
    expect(parseTask('run: first\nrun: second\n', 't.yaml').run).toBe('second');
  });

  it('merge keys and aliases', () => {
    const t = parseTask('envs: &common\n  A: "1"\n  B: "2"\nsecrets:\n  <<: *common\n  B: "3"\n', 't.yaml', { cwd: sb.root });
    expect(t.envs).toEqual({ A: '1', B: '2' });
    expect(t.secrets).toEqual({ A: '1', B: '3' });
  });

  it('y and n stay strings (PyYAML), yes is a boolean (YAML 1.1)', () => {
    expect(parseTask('run: y\n', 't.yaml').run).toBe('y');
    const t = parseTask('file_mounts:\n  /o:\n    name: b\n    persistent: yes\n', 't.yaml', { cwd: sb.root });
    expect(t.fileMounts[0]).toMatchObject({ kind: 'storage', name: 'b', persistent: true });
    const off = parseTask('file_mounts:\n  /o:\n    name: b\n    persistent: off\n', 't.yaml', { cwd: sb.root });
    expect(off.fileMounts[0]).toMatchObject({ kind: 'storage', persistent: false });
  });

  it('a float form PyYAML reads as a string is a valid name', () => {
    expect(parseTask('name: 1e3\n', 't.yaml').name).toBe('1e3');
  });

  it('num_nodes accepts YAML 1.1 integer forms', () => {
    expect(parseTask('num_nodes: 0x10\n', 't.yaml').numNodes).toBe(16);
  });

  it('an unquoted ~ source is the home directory', () => {
    const t = parseTask('file_mounts:\n  /h: ~\n', 't.yaml', { cwd: sb.root });
    expect(t.fileMounts[0]).toMatchObject({ kind: 'local', source: sb.home, sourceType: 'dir' });
  });
});

describe('parseDotenv and resources.accelerators', () => {
  it('reads NAME=VALUE lines: export, comments, quotes; messages name the line, never a value', () => {
    const text = '# c\nexport A=1\nB = two words # note\nC="q \\"x\\"\\nnext"\nD=\'raw $x\'\n\n';
    expect(parseDotenv(text, 'f.env', '--env-file')).toEqual({ A: '1', B: 'two words', C: 'q "x"\nnext', D: 'raw $x' });
    expect(() => parseDotenv('SECRETVALUE\n', 's.env', '--secret-file')).toThrow(/--secret-file s\.env:1: expected NAME=VALUE$/);
    expect(() => parseDotenv('1A=x\n', 's.env', '--secret-file')).toThrow(TaskError);
  });
  it('GPUs per node from resources.accelerators', () => {
    const gpus = (res: string) => parseTask(`resources:\n${res}\nrun: x\n`, 't.yaml', { cwd: sb.root }).gpusPerNode;
    expect(gpus('  accelerators: A100:8')).toBe(8);
    expect(gpus('  accelerators: T4')).toBe(1);
    expect(gpus('  accelerators: {H100: 4}')).toBe(4);
    expect(gpus('  accelerators: [L4:2, A10g:1]')).toBe(2);
    expect(gpus('  cpus: 4')).toBe(0);
  });
});
