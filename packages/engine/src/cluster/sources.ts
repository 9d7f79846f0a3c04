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
    if (m.kind === 'storage' && m.mode === 'COPY') {
      sources.push(await storageCopySource(t, m));
      continue;
    }
    const what = m.kind === 'uri' ? `a cloud URI (${m.uri})` : `a Storage object in ${m.mode} mode`;
    const but = m.kind === 'uri' ? ' (s3:// and gs:// are)' : ' (COPY is)';
    throw new TaskError(`${t.file}: ${m.key}: ${what} is not supported yet by skysync${but}; sync it with SkyPilot, or remove it from the task for now`);
  }
  return sources;
}

type StorageMount = Extract<FileMount, { kind: 'storage' }>;
const URI = /^[a-z][a-z0-9+.-]*:\/\//i;

/** A COPY Storage object: a local source is uploaded by the client first, then fetched by every node as a bucket
 * mount of the whole bucket; a URI source is a bucket mount of that URI (SkyPilot's rules for both). */
async function storageCopySource(t: TaskSources, m: StorageMount): Promise<SyncSource> {
  const { TaskError } = await import('@skysync/task');
  const uris = m.sources.filter((src) => URI.test(src));
  if (uris.length === 0 && m.sources.length > 0) return { kind: 'storage copy', mount: m };
  const uri = uris[0] ?? null;
  if (!uri || m.sources.length !== 1) throw new TaskError(`${t.file}: ${m.key}.source: a COPY Storage object takes one bucket URI or local directories, not both`);
  const scheme = uri.slice(0, uri.indexOf(':')).toLowerCase();
  if (!BUCKET_SCHEMES.includes(scheme)) throw new TaskError(`${t.file}: ${m.key}: copying from ${uri} is not supported yet by skysync (s3:// and gs:// are)`);
  return { kind: 'bucket mount', mount: { kind: 'uri', key: m.key, dest: m.dest, remote: m.remote, uri, scheme } };
}
