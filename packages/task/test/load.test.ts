import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTask, type FileMount, type Task } from '../src/index.js';
import { fixture, makeSandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeAll(() => {
  sb = makeSandbox();
});
afterAll(() => sb.cleanup());

function mount(task: Task, dest: string): FileMount {
  const m = task.fileMounts.find((x) => x.dest === dest);
  if (!m) throw new Error(`no mount for ${dest}: ${task.fileMounts.map((x) => x.dest).join(', ')}`);
  return m;
}

describe('valid fixtures', () => {
  it('minimal: run only, with defaults everywhere else', async () => {
    const t = await loadTask(fixture('minimal.yaml'), { cwd: sb.root });
    expect(t).toEqual({
      file: fixture('minimal.yaml'),
      name: null,
      workdir: null,
      setup: null,
      run: 'echo hello from skysync',
      envs: {},
      secrets: {},
      numNodes: 1,
      gpusPerNode: 0,
      fileMounts: [],
      ignoredKeys: [],
    });
  });

  it('workdir + setup + run + envs: values as written, --env fills nulls and wins', async () => {
    const t = await loadTask(fixture('workdir-setup-run.yaml'), { cwd: sb.root, env: { DATA_ROOT: '/mnt/data', EPOCHS: '3' } });
    expect(t.name).toBe('train-cnn');
    expect(t.workdir).toBe(path.join(sb.root, 'project'));
    expect(t.envs).toEqual({
      MODEL_NAME: 'resnet50',
      EPOCHS: '3',
      LR: '1e-4',
      USE_AMP: 'true',
      MODE: '0755',
      HF_HOME: '~/hf',
      DATA_ROOT: '/mnt/data',
    });
    // setup/run keep their $VARS: the remote shell expands them from the exported envs.
    expect(t.setup).toBe('pip install -r requirements.txt\necho "setting up $MODEL_NAME"\n');
    expect(t.run).toBe('python train.py --model ${MODEL_NAME} --epochs $EPOCHS --data $DATA_ROOT\n');
  });

  it('env substitution in workdir, file_mounts keys and values, storage name and source', async () => {
    const t = await loadTask(fixture('env-substitution.yaml'), { cwd: sb.root });
    expect(t.workdir).toBe(path.join(sb.root, 'project'));
    expect(t.fileMounts.map((m) => m.dest)).toEqual(['/mydir', '/another-dir2', '/checkpoint/13b', '/model_path/llama-13b', '/unknown/$NOT_DEFINED']);
    expect(mount(t, '/mydir')).toEqual({
      kind: 'storage',
      key: 'file_mounts./mydir',
      dest: '/mydir',
      remote: '/mydir',
      name: 'skypilot-temp-gcs-test',
      sources: [],
      store: null,
      mode: 'MOUNT',
      persistent: true,
    });
    expect(mount(t, '/another-dir2')).toMatchObject({ kind: 'storage', name: 'skypilot-temp-gcs-test-2', sources: [path.join(sb.home, 'tmp-workdir')] });
    expect(mount(t, '/checkpoint/13b')).toEqual({
      kind: 'local',
      key: 'file_mounts./checkpoint/${MODEL_SIZE}',
      dest: '/checkpoint/13b',
      remote: '/checkpoint/13b',
      source: path.join(sb.home, 'tmp-workdir'),
      sourceType: 'dir',
    });
    expect(mount(t, '/model_path/llama-13b')).toMatchObject({ kind: 'uri', uri: 's3://llama-weights/llama-13b', scheme: 's3' });
    expect(mount(t, '/unknown/$NOT_DEFINED').key).toBe('file_mounts./unknown/$NOT_DEFINED');
    expect(t.run).toContain('$MY_BUCKET is not substituted');
  });

  it('--env overrides feed the substitution too', async () => {
    const t = await loadTask(fixture('env-substitution.yaml'), { cwd: sb.root, env: { MODEL_SIZE: '70b', MY_BUCKET: 'other' } });
    expect(t.fileMounts.map((m) => m.dest)).toContain('/checkpoint/70b');
    expect(mount(t, '/model_path/llama-70b')).toMatchObject({ uri: 's3://llama-weights/llama-70b' });
    expect(mount(t, '/mydir')).toMatchObject({ name: 'other' });
  });

  it('file mounts: destinations, placements of remote paths, local file/dir and URI sources', async () => {
    const t = await loadTask(fixture('file-mounts.yaml'), { cwd: sb.root });
    expect(t.fileMounts).toEqual([
      { kind: 'local', key: 'file_mounts.data', dest: 'data', remote: '~/sky_workdir/data', source: path.join(sb.root, 'data'), sourceType: 'dir' },
      { kind: 'local', key: 'file_mounts.~/.vimrc', dest: '~/.vimrc', remote: '~/.vimrc', source: path.join(sb.home, '.vimrc'), sourceType: 'file' },
      { kind: 'local', key: 'file_mounts./tmp/notes.txt', dest: '/tmp/notes.txt', remote: '/tmp/notes.txt', source: path.join(sb.root, 'file.txt'), sourceType: 'file' },
      { kind: 'local', key: 'file_mounts./datasets/train', dest: '/datasets/train', remote: '/datasets/train', source: path.join(sb.root, 'data'), sourceType: 'dir' },
      { kind: 'local', key: 'file_mounts./mnt/linked', dest: '/mnt/linked', remote: '/mnt/linked', source: path.join(sb.root, 'data-link'), sourceType: 'dir' },
      {
        kind: 'uri',
        key: 'file_mounts./s3-data',
        dest: '/s3-data',
        remote: '/s3-data',
        uri: 's3://fah-public-data-covid19-cryptic-pockets/human/il6/PROJ14534/RUN999/CLONE0/results0',
        scheme: 's3',
      },
      { kind: 'uri', key: 'file_mounts./gcs-data', dest: '/gcs-data', remote: '/gcs-data', uri: 'gs://my-bucket/datasets/imagenet', scheme: 'gs' },
      {
        kind: 'local',
        key: 'file_mounts.~/inside-workdir-is-fine',
        dest: '~/inside-workdir-is-fine',
        remote: '~/inside-workdir-is-fine',
        source: path.join(sb.root, 'file.txt'),
        sourceType: 'file',
      },
    ]);
  });

  it('storage objects: MOUNT, COPY with a local list, MOUNT_CACHED, bucket URIs; store and mode case-insensitive', async () => {
    const t = await loadTask(fixture('storage.yaml'), { cwd: sb.root });
    expect(t.fileMounts).toEqual([
      { kind: 'storage', key: 'file_mounts./outputs', dest: '/outputs', remote: '/outputs', name: 'my-sky-outputs', sources: [], store: 's3', mode: 'MOUNT', persistent: true },
      {
        kind: 'storage',
        key: 'file_mounts./inputs',
        dest: '/inputs',
        remote: '/inputs',
        name: 'my-inputs',
        sources: [path.join(sb.root, 'data'), path.join(sb.root, 'file.txt')],
        store: 'gcs',
        mode: 'COPY',
        persistent: false,
      },
      {
        kind: 'storage',
        key: 'file_mounts./checkpoints',
        dest: '/checkpoints',
        remote: '/checkpoints',
        name: 'ckpt-bucket',
        sources: [path.join(sb.root, 'ckpt')],
        store: 'azure',
        mode: 'MOUNT_CACHED',
        persistent: true,
      },
      {
        kind: 'storage',
        key: 'file_mounts./public',
        dest: '/public',
        remote: '/public',
        name: null,
        sources: ['gs://public-bucket'],
        store: null,
        mode: 'MOUNT',
        persistent: true,
      },
      {
        kind: 'storage',
        key: 'file_mounts./subset',
        dest: '/subset',
        remote: '/subset',
        name: null,
        sources: ['r2://my-r2-bucket/subset/2024'],
        store: null,
        mode: 'COPY',
        persistent: true,
      },
    ]);
    // SkyPilot's rclone tuning block is accepted and reported as unused.
    expect(t.ignoredKeys).toEqual(['file_mounts./checkpoints.config']);
  });

  it('num_nodes', async () => {
    const t = await loadTask(fixture('num-nodes.yaml'), { cwd: sb.root });
    expect(t.numNodes).toBe(4);
    expect(t.run).toBe('echo "node $SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES"');
  });

  it('keys SkyPilot knows but skysync does not use are listed, in YAML order', async () => {
    const t = await loadTask(fixture('ignored-keys.yaml'), { cwd: sb.root });
    expect(t.ignoredKeys).toEqual(['resources', 'service', 'config', 'event_callback', 'inputs', 'outputs']);
    expect(t.name).toBe('serve-llm');
    expect(t.run).toBe('python -m vllm.entrypoints.openai.api_server');
  });

  it('the examples from the SkyPilot docs and the brief', async () => {
    const t = await loadTask(fixture('seed-examples.yaml'), { cwd: sb.root });
    const byDest = Object.fromEntries(t.fileMounts.map((m) => [m.dest, m]));
    expect(Object.keys(byDest)).toEqual(['/remote/datasets', '~/.vimrc', '~/.ssh/id_rsa.pub', '/s3-data-test', '/remote/path', '/remote/obj', '/outputs']);
    expect(byDest['/remote/datasets']).toMatchObject({ kind: 'local', source: path.join(sb.home, 'local/datasets'), sourceType: 'dir' });
    expect(byDest['~/.ssh/id_rsa.pub']).toMatchObject({ kind: 'local', remote: '~/.ssh/id_rsa.pub', sourceType: 'file' });
    expect(byDest['/remote/path']).toMatchObject({ kind: 'local', source: path.join(sb.home, 'local/path'), sourceType: 'file' });
    expect(byDest['/remote/obj']).toMatchObject({ kind: 'uri', uri: 's3://bucket/key', scheme: 's3' });
    expect(byDest['/outputs']).toMatchObject({ kind: 'storage', name: 'my-bucket', sources: [path.join(sb.home, 'local/dir')], store: 's3', mode: 'MOUNT' });
  });

  it('a relative task path resolves against opts.cwd, and Task.file is absolute', async () => {
    const rel = path.relative(sb.root, fixture('minimal.yaml'));
    const t = await loadTask(rel, { cwd: sb.root });
    expect(t.file).toBe(fixture('minimal.yaml'));
    expect(path.isAbsolute(t.file)).toBe(true);
  });
});
