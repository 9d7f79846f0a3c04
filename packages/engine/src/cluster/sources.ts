// What a task syncs, as sources the engine knows how to sync: the workdir, local file mounts, and s3:// / gs://
// URI mounts (each node fetches those itself). A kind of file mount the engine cannot sync yet is refused here,
// by name, before anything connects.

import type { FileMount } from '@skysync/task';
import { BUCKET_SCHEMES } from '../bucket/mount.js';
import type { SyncSource } from './sync-task.js';

export interface TaskSources {
  /** The directory to sync into `dest`, if any. */
  workdir: string | null;
  dest: string;
  /** The task file, for messages. */
  file: string;
  fileMounts: FileMount[];
}

export async function taskSources(t: TaskSources): Promise<SyncSource[]> {
  const sources: SyncSource[] = t.workdir ? [{ kind: 'workdir', source: t.workdir, dest: t.dest }] : [];
  for (const m of t.fileMounts) {
    if (m.kind === 'local') {
      sources.push({ kind: 'local mount', mount: m });
      continue;
    }
    // Loaded only for tasks: the YAML parser costs every other command startup time.
    const { TaskError } = await import('@skysync/task');
    if (m.kind === 'uri' && BUCKET_SCHEMES.includes(m.scheme)) {
      const { parseStoreUri } = await import('@skysync/store');
      try {
        parseStoreUri(m.uri);
      } catch (e) {
        throw new TaskError(`${t.file}: ${m.key}: ${(e as Error).message}`);
      }
      sources.push({ kind: 'bucket mount', mount: m });
      continue;
    }
    const what = m.kind === 'uri' ? `a cloud URI (${m.uri})` : 'a Storage object';
    const but = m.kind === 'uri' ? ' (s3:// and gs:// are)' : '';
    throw new TaskError(`${t.file}: ${m.key}: ${what} is not supported yet by skysync${but}; sync it with SkyPilot, or remove it from the task for now`);
  }
  return sources;
}
