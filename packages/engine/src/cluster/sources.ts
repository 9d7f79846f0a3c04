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
    if (m.kind === 'storage') {
      sources.push(await fuseMountSource(t, m));
      continue;
    }
    throw new TaskError(
      `${t.file}: ${m.key}: a cloud URI (${m.uri}) is not supported yet by skysync (s3:// and gs:// are); sync it with SkyPilot, or remove it from the task for now`,
    );
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

/** A MOUNT or MOUNT_CACHED Storage object: a bucket URI source is mounted as it is (a prefix too); local sources
 * are uploaded to the named bucket first, as for COPY; a name alone is that bucket, created when missing. */
async function fuseMountSource(t: TaskSources, m: StorageMount): Promise<SyncSource> {
  const { TaskError } = await import('@skysync/task');
  const uris = m.sources.filter((src) => URI.test(src));
  if (uris.length && m.sources.length !== 1) throw new TaskError(`${t.file}: ${m.key}.source: a ${m.mode} Storage object takes one bucket URI or local directories, not both`);
  const uri = uris[0];
  if (uri) {
    const scheme = uri.slice(0, uri.indexOf(':')).toLowerCase();
    if (!BUCKET_SCHEMES.includes(scheme)) throw new TaskError(`${t.file}: ${m.key}: mounting ${uri} is not supported yet by skysync (s3:// and gs:// are)`);
    const { parseStoreUri } = await import('@skysync/store');
    try {
      parseStoreUri(uri);
    } catch (e) {
      throw new TaskError(`${t.file}: ${m.key}.source: ${(e as Error).message}`);
    }
  } else if (!m.name) {
    throw new TaskError(`${t.file}: ${m.key}: a ${m.mode} Storage object needs a bucket: give name, or a source that is an s3:// or gs:// URI`);
  } else if (m.store && m.store !== 's3' && m.store !== 'gcs') {
    throw new TaskError(`${t.file}: ${m.key}.store: mounting store "${m.store}" is not supported yet by skysync (s3 and gcs are)`);
  }
  return { kind: 'fuse mount', mount: m };
}
