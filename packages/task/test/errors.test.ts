import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTask, parseTask, type LoadOptions } from '../src/index.js';
import { expectTaskError, expectTaskErrorAsync, fixture, makeSandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(() => {
  sb = makeSandbox();
});
afterAll(() => sb.cleanup());

describe('invalid fixture files', () => {
  const load = async (name: string): Promise<string> => expectTaskErrorAsync(loadTask(fixture(`invalid/${name}`), { cwd: sb.root }));

  it('a YAML syntax error gives file:line:col and the parser reason', async () => {
    const msg = await load('syntax-error.yaml');
    expect(msg).toMatch(/^\S*invalid\/syntax-error\.yaml:4:1: .*sequence.*; fix the YAML syntax at that position$/);
  });

  it('a typo in a top-level key gets a suggestion', async () => {
    const msg = await load('unknown-key.yaml');
    expect(msg).toBe(`${fixture('invalid/unknown-key.yaml')}: runn: unknown key; did you mean "run"?`);
  });

  it('the document must be a mapping', async () => {
    expect(await load('not-a-mapping.yaml')).toContain('not-a-mapping.yaml: (document): a task must be a YAML mapping');
  });

  it('run as a list', async () => {
    expect(await load('run-as-list.yaml')).toContain('run-as-list.yaml: run: expected a string, got a list; write the commands as one block');
  });

  it('a destination with a trailing slash', async () => {
    expect(await load('trailing-slash.yaml')).toContain('trailing-slash.yaml: file_mounts./remote/data/: destination "/remote/data/" ends with "/"; remove the trailing slash');
  });

  it('~/sky_workdir is reserved when a workdir is set', async () => {
    expect(await load('reserved-workdir.yaml')).toContain(
      'reserved-workdir.yaml: file_mounts.~/sky_workdir: ~/sky_workdir is where the workdir is synced; mount to a path inside it',
    );
  });

  it('a local source that does not exist', async () => {
    const msg = await load('missing-source.yaml');
    expect(msg).toContain('missing-source.yaml: file_mounts./remote/data: local source "./does-not-exist"');
    expect(msg).toContain('does not exist; create it or fix the path');
  });

  it('an unknown storage field', async () => {
    expect(await load('bad-storage-field.yaml')).toContain('bad-storage-field.yaml: file_mounts./outputs.sorce: unknown storage field; did you mean "source"?');
  });

  it('a task file that cannot be read', async () => {
    const msg = await expectTaskErrorAsync(loadTask('no-such-task.yaml', { cwd: sb.root }));
    expect(msg).toBe('no-such-task.yaml: (file): cannot read the task file (no such file); check the path');
  });
});

interface Case {
  rule: string;
  yaml: string;
  key: string;
  fix: string[];
  opts?: LoadOptions;
}

// One inline case per validation rule: the message names the file and the key, says what is wrong and what to do.
const cases: Case[] = [
  // document
  { rule: 'several YAML documents', yaml: 'run: a\n---\nrun: b\n', key: '(document)', fix: ['holds 2 YAML documents', 'keep one task per file'] },
  { rule: 'a scalar document', yaml: 'just text\n', key: '(document)', fix: ['got a string ("just text")', 'write the task as "key: value" lines'] },
  { rule: 'a list as a key', yaml: '? [a, b]\n: x\n', key: '(document)', fix: ['a key is a mapping or a list', 'use plain text keys'] },
  { rule: 'an unknown key far from any known one', yaml: 'docker: ubuntu\nrun: x\n', key: 'docker', fix: ['unknown key', 'remove it (task keys: name, workdir'] },
  { rule: 'a misspelt key', yaml: 'file_mount:\n  /a: ./data\n', key: 'file_mount', fix: ['did you mean "file_mounts"?'] },
  { rule: 'a key differing in case', yaml: 'Run: x\n', key: 'Run', fix: ['did you mean "run"?'] },
  // name
  { rule: 'name not a string', yaml: 'name: 123\n', key: 'name', fix: ['expected a string, got a number (123)', 'quote it or remove it'] },
  { rule: 'name with spaces', yaml: 'name: my task\n', key: 'name', fix: ['"my task" is not a valid task name', 'e.g. my-task'] },
  { rule: 'name with a triple dash', yaml: 'name: a---b\n', key: 'name', fix: ['not a valid task name'] },
  // workdir
  { rule: 'workdir missing', yaml: 'workdir: ./nope\n', key: 'workdir', fix: ['"./nope" (', 'does not exist; create it or fix the path'] },
  { rule: 'workdir is a file', yaml: 'workdir: file.txt\n', key: 'workdir', fix: ['is not a directory', 'a symlink to one is fine'] },
  { rule: 'workdir is a dangling symlink', yaml: 'workdir: dangling\n', key: 'workdir', fix: ['does not exist'] },
  { rule: 'workdir as a git repository', yaml: 'workdir:\n  url: https://github.com/a/b\n  ref: main\n', key: 'workdir', fix: ['git repository', 'clone the repository'] },
  { rule: 'workdir not a string', yaml: 'workdir: [a, b]\n', key: 'workdir', fix: ['expected a directory path, got a list'] },
  // num_nodes
  { rule: 'num_nodes zero', yaml: 'num_nodes: 0\n', key: 'num_nodes', fix: ['expected a positive integer, got a number (0)', 'num_nodes: 2'] },
  { rule: 'num_nodes negative', yaml: 'num_nodes: -2\n', key: 'num_nodes', fix: ['positive integer'] },
  { rule: 'num_nodes a float', yaml: 'num_nodes: 2.0\n', key: 'num_nodes', fix: ['got a number (2.0)'] },
  { rule: 'num_nodes quoted', yaml: 'num_nodes: "2"\n', key: 'num_nodes', fix: ['got a string ("2")'] },
  { rule: 'num_nodes a boolean', yaml: 'num_nodes: true\n', key: 'num_nodes', fix: ['got a boolean (true)'] },
  // setup / run
  { rule: 'setup as a list', yaml: 'setup:\n  - pip install x\n', key: 'setup', fix: ['got a list', '"setup: |"'] },
  { rule: 'setup as a mapping', yaml: 'setup:\n  a: b\n', key: 'setup', fix: ['got a mapping'] },
  { rule: 'run as a number', yaml: 'run: 42\n', key: 'run', fix: ['got a number (42)', 'quote it'] },
  // envs / secrets
  { rule: 'envs as a list', yaml: 'envs:\n  - A=1\n', key: 'envs', fix: ['expected a mapping of NAME: value, got a list', 'one "NAME: value" per line'] },
  { rule: 'env name starting with a digit', yaml: 'envs:\n  1BAD: x\n', key: 'envs.1BAD', fix: ['not a valid environment variable name', 'not starting with a digit'] },
  { rule: 'env name with a dash', yaml: 'envs:\n  MY-VAR: x\n', key: 'envs.MY-VAR', fix: ['not a valid environment variable name'] },
  { rule: 'env value null and no --env', yaml: 'envs:\n  HF_TOKEN: null\n', key: 'envs.HF_TOKEN', fix: ['has no value', '--env HF_TOKEN=VALUE'] },
  { rule: 'env value empty and no --env', yaml: 'envs:\n  HF_TOKEN:\n', key: 'envs.HF_TOKEN', fix: ['has no value', 'HF_TOKEN: ""'] },
  { rule: 'env value a mapping', yaml: 'envs:\n  CFG:\n    a: 1\n', key: 'envs.CFG', fix: ['got a mapping', 'quote the value'] },
  { rule: 'secret null and no --secret', yaml: 'secrets:\n  WANDB_API_KEY: null\n', key: 'secrets.WANDB_API_KEY', fix: ['has no value', '--secret WANDB_API_KEY=VALUE'] },
  { rule: 'an --env value does not fill a null secret', yaml: 'secrets:\n  TOKEN: null\n', key: 'secrets.TOKEN', fix: ['--secret TOKEN=VALUE'], opts: { env: { TOKEN: 'x' } } },
  { rule: 'secrets as a list of managed names', yaml: 'secrets:\n  - my-secret\n', key: 'secrets', fix: ['managed secret', 'write a mapping NAME: value'] },
  { rule: 'secret name invalid', yaml: 'secrets:\n  bad.name: x\n', key: 'secrets.bad.name', fix: ['not a valid environment variable name'] },
  // file_mounts: shape
  { rule: 'file_mounts as a list', yaml: 'file_mounts:\n  - /a: ./data\n', key: 'file_mounts', fix: ['got a list', '"/remote/path: local/path"'] },
  { rule: 'a mount with no source', yaml: 'file_mounts:\n  /a:\n', key: 'file_mounts./a', fix: ['got nothing (null)', '"/a: ~/local/path"'] },
  { rule: 'a mount whose source is a number', yaml: 'file_mounts:\n  /a: 2024\n', key: 'file_mounts./a', fix: ['got a number (2024)', 'quote a path'] },
  { rule: 'a mount whose source is a list', yaml: 'file_mounts:\n  /a: [./data]\n', key: 'file_mounts./a', fix: ['got a list'] },
  { rule: 'an empty destination', yaml: 'file_mounts:\n  "": ./data\n', key: 'file_mounts.', fix: ['empty destination', 'e.g. /data'] },
  // file_mounts: slashes
  { rule: 'a source with a trailing slash', yaml: 'file_mounts:\n  /a: ./data/\n', key: 'file_mounts./a', fix: ['source "./data/" ends with "/"', 'remove the trailing slash'] },
  { rule: 'a URI source with a trailing slash', yaml: 'file_mounts:\n  /a: s3://bucket/dir/\n', key: 'file_mounts./a', fix: ['ends with "/"', 'remove the trailing slash'] },
  { rule: 'a root destination', yaml: 'file_mounts:\n  /: ./data\n', key: 'file_mounts./', fix: ['remove the trailing slash'] },
  { rule: 'a home destination with a trailing slash', yaml: 'file_mounts:\n  ~/: ./data\n', key: 'file_mounts.~/', fix: ['remove the trailing slash'] },
  // file_mounts: URI destinations
  ...['s3://b/k', 'gs://b/k', 'r2://b/k', 'cos://us-east/b', 'oci://b/k', 'https://acct.blob.core.windows.net/c'].map(
    (uri): Case => ({
      rule: `a ${uri.split(':')[0]} destination`,
      yaml: `file_mounts:\n  ${uri}: ./data\n`,
      key: `file_mounts.${uri}`,
      fix: ['is a cloud URI', 'put the URI on the right-hand side'],
    }),
  ),
  // file_mounts: reserved workdir
  { rule: '~/sky_workdir written as "."', yaml: 'workdir: project\nfile_mounts:\n  .: ./data\n', key: 'file_mounts..', fix: ['~/sky_workdir is where the workdir is synced'] },
  {
    rule: 'a storage mount on ~/sky_workdir',
    yaml: 'workdir: project\nfile_mounts:\n  ~/sky_workdir:\n    name: b\n',
    key: 'file_mounts.~/sky_workdir',
    fix: ['where the workdir is synced'],
  },
  // file_mounts: sources
  { rule: 'a dangling symlink source', yaml: 'file_mounts:\n  /a: dangling\n', key: 'file_mounts./a', fix: ['does not exist'] },
  {
    rule: 'an unsupported URI scheme',
    yaml: 'file_mounts:\n  /a: ftp://host/file\n',
    key: 'file_mounts./a',
    fix: ['"ftp://host/file" is not a supported cloud URI', 's3://, gs://'],
  },
  { rule: 'a plain http URL', yaml: 'file_mounts:\n  /a: http://example.com/x.tar\n', key: 'file_mounts./a', fix: ['not a supported cloud URI'] },
  {
    rule: 'an https URL that is not Azure Blob',
    yaml: 'file_mounts:\n  /a: https://example.com/x.tar\n',
    key: 'file_mounts./a',
    fix: ['not an Azure Blob container URL', 'blob.core.windows.net'],
  },
  // storage
  { rule: 'storage with neither name nor source', yaml: 'file_mounts:\n  /o:\n    mode: MOUNT\n', key: 'file_mounts./o', fix: ['needs a name or a source', 'add name: <bucket>'] },
  {
    rule: 'storage name that is a URI',
    yaml: 'file_mounts:\n  /o:\n    name: s3://bucket\n',
    key: 'file_mounts./o.name',
    fix: ['is a URI', 'put an existing bucket URI in source'],
  },
  { rule: 'storage name not a string', yaml: 'file_mounts:\n  /o:\n    name: [a]\n', key: 'file_mounts./o.name', fix: ['expected a bucket name, got a list'] },
  {
    rule: 'an unknown store',
    yaml: 'file_mounts:\n  /o:\n    name: b\n    store: gcp\n',
    key: 'file_mounts./o.store',
    fix: ['unknown store "gcp"', 'did you mean "gcs"?', 'use one of s3, gcs, azure, r2, ibm, oci'],
  },
  { rule: 'a volume store', yaml: 'file_mounts:\n  /o:\n    name: v\n    store: volume\n', key: 'file_mounts./o.store', fix: ['SkyPilot volume', 'use a bucket store'] },
  {
    rule: 'an unknown mode',
    yaml: 'file_mounts:\n  /o:\n    name: b\n    mode: SYNC\n',
    key: 'file_mounts./o.mode',
    fix: ['unknown mode "SYNC"', 'use MOUNT, COPY or MOUNT_CACHED'],
  },
  { rule: 'persistent not a boolean', yaml: 'file_mounts:\n  /o:\n    name: b\n    persistent: sometimes\n', key: 'file_mounts./o.persistent', fix: ['expected true or false'] },
  {
    rule: 'an unknown storage field with no close match',
    yaml: 'file_mounts:\n  /o:\n    name: b\n    region: us-east-1\n',
    key: 'file_mounts./o.region',
    fix: ['unknown storage field', 'storage fields are name, source, store, mode, persistent'],
  },
  {
    rule: 'a local storage source without a name',
    yaml: 'file_mounts:\n  /o:\n    source: ./data\n',
    key: 'file_mounts./o.source',
    fix: ['no bucket name is given', 'add name: <bucket>'],
  },
  {
    rule: 'a bucket URI source with a name',
    yaml: 'file_mounts:\n  /o:\n    name: b\n    source: s3://other\n',
    key: 'file_mounts./o.name',
    fix: ['must not be set when source is a bucket URI', 'remove name'],
  },
  {
    rule: 'a file as a single storage source',
    yaml: 'file_mounts:\n  /o:\n    name: b\n    source: ./file.txt\n',
    key: 'file_mounts./o.source',
    fix: ['is a file', 'write source: [./file.txt]'],
  },
  { rule: 'a missing storage source', yaml: 'file_mounts:\n  /o:\n    name: b\n    source: ~/nope\n', key: 'file_mounts./o.source', fix: ['does not exist'] },
  {
    rule: 'a storage source with a trailing slash',
    yaml: 'file_mounts:\n  /o:\n    name: b\n    source: ./data/\n',
    key: 'file_mounts./o.source',
    fix: ['remove the trailing slash'],
  },
  { rule: 'an empty source list', yaml: 'file_mounts:\n  /o:\n    name: b\n    source: []\n', key: 'file_mounts./o.source', fix: ['empty list'] },
  { rule: 'a URI inside a source list', yaml: 'file_mounts:\n  /o:\n    name: b\n    source: [./data, s3://x]\n', key: 'file_mounts./o.source[1]', fix: ['local paths only'] },
  {
    rule: 'a missing path inside a source list',
    yaml: 'file_mounts:\n  /o:\n    name: b\n    source: [./data, ./gone]\n',
    key: 'file_mounts./o.source[1]',
    fix: ['does not exist'],
  },
  {
    rule: 'two sources with the same base name',
    yaml: 'file_mounts:\n  /o:\n    name: b\n    source: [./data, ./project/../data]\n',
    key: 'file_mounts./o.source[1]',
    fix: ['both land at /o/data', 'rename one'],
  },
  {
    rule: 'MOUNT of a path inside a bucket',
    yaml: 'file_mounts:\n  /o:\n    source: s3://bucket/sub/dir\n',
    key: 'file_mounts./o.source',
    fix: ['MOUNT mode mounts a whole bucket', 'use mode: COPY'],
  },
  {
    rule: 'MOUNT_CACHED of a path inside a bucket',
    yaml: 'file_mounts:\n  /o:\n    source: gs://bucket/sub\n    mode: mount_cached\n',
    key: 'file_mounts./o.source',
    fix: ['MOUNT_CACHED mode mounts a whole bucket'],
  },
  { rule: 'an unsupported storage URI', yaml: 'file_mounts:\n  /o:\n    source: ftp://x/y\n', key: 'file_mounts./o.source', fix: ['not a supported cloud URI', 'hf://'] },
  {
    rule: 'a storage source that is a number',
    yaml: 'file_mounts:\n  /o:\n    name: b\n    source: 5\n',
    key: 'file_mounts./o.source',
    fix: ['expected a local directory or a bucket URI, got a number (5)'],
  },
];

describe('one error per validation rule (inline)', () => {
  it.each(cases)('$rule', ({ yaml, key, fix, opts }) => {
    expectTaskError(() => parseTask(yaml, 'bad.yaml', { cwd: sb.root, ...opts }), 'bad.yaml', key, ...fix);
  });
});

it('an alias bomb is refused instead of expanded', () => {
  const levels = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
  for (const [prev, cur] of [
    ['a', 'b'],
    ['b', 'c'],
    ['c', 'd'],
    ['d', 'e'],
    ['e', 'f'],
  ] as const) {
    levels.push(`${cur}: &${cur} [${Array(10).fill(`*${prev}`).join(', ')}]`);
  }
  const yaml = `resources:\n${levels.map((l) => `  ${l}`).join('\n')}\n`;
  expect(() => parseTask(yaml, 'bad.yaml', { cwd: sb.root })).toThrow(
    /^bad\.yaml: resources\.[a-f]\[.*: the YAML nests or repeats too much \(an alias bomb\?\); simplify the anchors and aliases$/,
  );
});

describe('accepted edge cases SkyPilot also accepts', () => {
  it('a symlink to a directory as workdir, ~ expansion, and env substitution in workdir', () => {
    expect(parseTask('workdir: project-link\n', 't.yaml', { cwd: sb.root }).workdir).toBe(`${sb.root}/project-link`);
    expect(parseTask('workdir: ~/local/dir\n', 't.yaml', { cwd: sb.root }).workdir).toBe(`${sb.home}/local/dir`);
    expect(parseTask('envs:\n  W: project\nworkdir: ./$W\n', 't.yaml', { cwd: sb.root }).workdir).toBe(`${sb.root}/project`);
  });

  it('~/sky_workdir is free when there is no workdir, and paths inside it are always allowed', () => {
    const t = parseTask('file_mounts:\n  ~/sky_workdir: ./data\n', 't.yaml', { cwd: sb.root });
    expect(t.fileMounts[0]).toMatchObject({ dest: '~/sky_workdir', remote: '~/sky_workdir' });
    const u = parseTask('workdir: project\nfile_mounts:\n  ~/sky_workdir/data: ./data\n', 't.yaml', { cwd: sb.root });
    expect(u.fileMounts[0]).toMatchObject({ dest: '~/sky_workdir/data', remote: '~/sky_workdir/data' });
  });

  it('an empty file is an empty task', () => {
    const t = parseTask('# nothing yet\n', 't.yaml', { cwd: sb.root });
    expect(t).toMatchObject({ name: null, run: null, numNodes: 1, fileMounts: [], ignoredKeys: [] });
  });

  it('null sections are treated as absent', () => {
    const t = parseTask('envs:\nfile_mounts:\nsetup:\nrun:\nnum_nodes:\n', 't.yaml', { cwd: sb.root });
    expect(t).toMatchObject({ envs: {}, fileMounts: [], setup: null, run: null, numNodes: 1 });
  });

  it('an Azure Blob https:// source and a cos:// bucket mount', () => {
    const t = parseTask('file_mounts:\n  /az: https://myacct.blob.core.windows.net/container/path\n  /cos:\n    source: cos://us-east/my-bucket\n', 't.yaml', { cwd: sb.root });
    expect(t.fileMounts[0]).toMatchObject({ kind: 'uri', scheme: 'https' });
    expect(t.fileMounts[1]).toMatchObject({ kind: 'storage', sources: ['cos://us-east/my-bucket'], name: null });
  });

  it('a COPY storage with only a name (an existing bucket) is accepted', () => {
    const t = parseTask('file_mounts:\n  /o:\n    name: existing\n    mode: COPY\n', 't.yaml', { cwd: sb.root });
    expect(t.fileMounts[0]).toMatchObject({ kind: 'storage', name: 'existing', sources: [], mode: 'COPY' });
  });
});
