import { describe, expect, it } from 'vitest';
import type { FileMount } from '@skysync/task';
import { taskSources } from '../src/cluster/sources.js';

const local: FileMount = { kind: 'local', key: 'file_mounts./data', dest: '/data', remote: '/data', source: '/home/me/data', sourceType: 'dir' };

describe('taskSources', () => {
  it('puts the workdir first, then each local mount in the task\'s order', async () => {
    const second: FileMount = { ...local, key: 'file_mounts.~/cfg', dest: '~/cfg', remote: '~/cfg', source: '/home/me/cfg', sourceType: 'file' };
    const sources = await taskSources({ workdir: '/home/me/proj', dest: '~/sky_workdir', file: 't.yaml', fileMounts: [local, second] });
    expect(sources).toEqual([
      { kind: 'workdir', source: '/home/me/proj', dest: '~/sky_workdir' },
      { kind: 'local mount', mount: local },
      { kind: 'local mount', mount: second },
    ]);
    expect(await taskSources({ workdir: null, dest: '~/sky_workdir', file: '', fileMounts: [] })).toEqual([]);
  });

  it('refuses a kind it cannot sync yet, by name, as a problem of the task', async () => {
    const uri: FileMount = { kind: 'uri', key: 'file_mounts./ckpt', dest: '/ckpt', remote: '/ckpt', uri: 's3://b/ckpt', scheme: 's3' };
    const refused = taskSources({ workdir: '/p', dest: '~/sky_workdir', file: 't.yaml', fileMounts: [local, uri] });
    await expect(refused).rejects.toThrow('t.yaml: file_mounts./ckpt: a cloud URI (s3://b/ckpt) is not supported yet');
    await expect(refused).rejects.toMatchObject({ name: 'TaskError' });
  });
});
