import { describe, expect, it } from 'vitest';
import type { FileMount } from '@skysync/task';
import { taskSources } from '../src/cluster/sources.js';

const local: FileMount = { kind: 'local', key: 'file_mounts./data', dest: '/data', remote: '/data', source: '/home/me/data', sourceType: 'dir' };

describe('taskSources', () => {
  it("puts the workdir first, then each local mount in the task's order", async () => {
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
    const uri: FileMount = { kind: 'uri', key: 'file_mounts./ckpt', dest: '/ckpt', remote: '/ckpt', uri: 'r2://b/ckpt', scheme: 'r2' };
    const refused = taskSources({ workdir: '/p', dest: '~/sky_workdir', file: 't.yaml', fileMounts: [local, uri] });
    await expect(refused).rejects.toThrow('t.yaml: file_mounts./ckpt: a cloud URI (r2://b/ckpt) is not supported yet');
    await expect(refused).rejects.toMatchObject({ name: 'TaskError' });
  });

  it('takes s3:// and gs:// mounts as bucket mounts, and refuses a bad bucket name by mount', async () => {
    const s3: FileMount = { kind: 'uri', key: 'file_mounts./ckpt', dest: '/ckpt', remote: '/ckpt', uri: 's3://my-bucket/ckpt', scheme: 's3' };
    const gs: FileMount = { ...s3, key: 'file_mounts./w', uri: 'gs://my_bucket/w.bin', scheme: 'gs' };
    expect(await taskSources({ workdir: null, dest: '~/sky_workdir', file: 't.yaml', fileMounts: [s3, gs] })).toEqual([
      { kind: 'bucket mount', mount: s3 },
      { kind: 'bucket mount', mount: gs },
    ]);
    const bad = taskSources({ workdir: null, dest: '~/sky_workdir', file: 't.yaml', fileMounts: [{ ...s3, uri: 's3://No_Such' }] });
    await expect(bad).rejects.toThrow('t.yaml: file_mounts./ckpt: invalid bucket URI "s3://No_Such"');
  });
});
