import path from 'node:path';
import { fail, q } from './errors.js';
import { substitute } from './envs.js';
import { isAzureBlobUrl, REMOTE_WORKDIR, remoteFor, resolveLocal, statFollow, uriParts, urlScheme } from './paths.js';
import { closest, didYouMean } from './suggest.js';
import { describe, type YNode } from './tree.js';

export type FileMount =
  | { kind: 'local'; key: string; dest: string; remote: string; source: string; sourceType: 'file' | 'dir' }
  | { kind: 'uri'; key: string; dest: string; remote: string; uri: string; scheme: string }
  | {
      kind: 'storage';
      key: string;
      dest: string;
      remote: string;
      name: string | null;
      sources: string[];
      store: string | null;
      mode: 'MOUNT' | 'COPY' | 'MOUNT_CACHED';
      /** SkyPilot's default true; false: a bucket skysync creates for this mount may be deleted with it
       * (`skysync storage delete`); a bucket it did not create never is. */
      persistent: boolean;
    };

/** URI schemes SkyPilot can fetch onto the nodes for a plain file mount ("https" means Azure Blob). */
const MOUNT_URI_SCHEMES = ['s3', 'gs', 'r2', 'cos', 'oci', 'nebius', 'cw', 'vastdata', 'https'];
/** Storage sources may also be Hugging Face buckets/repos. */
const STORAGE_URI_SCHEMES = [...MOUNT_URI_SCHEMES, 'hf'];
const STORES = ['s3', 'gcs', 'azure', 'r2', 'ibm', 'oci', 'nebius', 'coreweave', 'vastdata', 'hf'];
const MODES = ['MOUNT', 'COPY', 'MOUNT_CACHED'] as const;
const STORAGE_FIELDS_USED = ['name', 'source', 'store', 'mode', 'persistent'];
/** Storage fields SkyPilot accepts that skysync has no use for (FUSE tuning, internal bookkeeping). */
const STORAGE_FIELDS_IGNORED = ['config', 'type', 'mount_options', '_is_sky_managed', '_bucket_sub_path', '_force_delete', '_store_region'];

export interface MountContext {
  file: string;
  cwd: string;
  vars: Readonly<Record<string, string>>;
  hasWorkdir: boolean;
  ignored: string[];
}

function checkDest(ctx: MountContext, key: string, dest: string): string {
  if (dest === '') fail(ctx.file, key, 'empty destination', 'write the path on the node as the key (e.g. /data or ~/data)');
  if (dest.endsWith('/')) fail(ctx.file, key, `destination ${q(dest)} ends with "/"`, 'remove the trailing slash');
  if (uriParts(dest)) fail(ctx.file, key, `destination ${q(dest)} is a cloud URI`, 'use a path on the node as the key and put the URI on the right-hand side');
  const remote = remoteFor(dest);
  // SkyPilot reserves exactly ~/sky_workdir; "." (the same place written relatively) is refused too.
  if (ctx.hasWorkdir && (dest === REMOTE_WORKDIR || remote === REMOTE_WORKDIR)) {
    fail(ctx.file, key, `${REMOTE_WORKDIR} is where the workdir is synced`, `mount to a path inside it (e.g. ${REMOTE_WORKDIR}/data) or elsewhere`);
  }
  return remote;
}

function localSource(ctx: MountContext, key: string, written: string): { abs: string; type: 'file' | 'dir' } {
  if (written.endsWith('/')) fail(ctx.file, key, `source ${q(written)} ends with "/"`, 'remove the trailing slash');
  const abs = resolveLocal(written, ctx.cwd);
  const st = statFollow(abs);
  const shown = abs === written ? q(written) : `${q(written)} (${abs})`;
  if (st.kind === 'missing') fail(ctx.file, key, `local source ${shown} does not exist`, 'create it or fix the path (relative paths start from the current directory)');
  if (st.kind === 'error') fail(ctx.file, key, `local source ${shown} cannot be read (${st.code})`, 'fix its permissions or the symlink it points through');
  return { abs, type: st.kind };
}

function uriSource(ctx: MountContext, key: string, uri: string, schemes: readonly string[]): string {
  const parts = uriParts(uri);
  const scheme = parts?.scheme ?? urlScheme(uri);
  if (!parts || !schemes.includes(scheme)) {
    fail(ctx.file, key, `${q(uri)} is not a supported cloud URI`, `use a local path or one of ${schemes.map((s) => `${s}://`).join(', ')}`);
  }
  if (scheme === 'https' && !isAzureBlobUrl(uri)) {
    fail(ctx.file, key, `${q(uri)} is not an Azure Blob container URL`, 'https:// sources must look like https://<account>.blob.core.windows.net/<container>[/path]');
  }
  return scheme;
}

function stringField(ctx: MountContext, key: string, node: YNode, what: string): string {
  if (node.kind !== 'scalar' || typeof node.value !== 'string') fail(ctx.file, key, `expected ${what}, got ${describe(node)}`, `write ${what}`);
  return substitute(node.value, ctx.vars);
}

type StorageNode = YNode & { kind: 'map' };
type StorageMode = (typeof MODES)[number];

/** Every field is one skysync uses or knowingly ignores (those are noted in `ctx.ignored`). */
function checkStorageFields(ctx: MountContext, key: string, node: StorageNode): void {
  const known = [...STORAGE_FIELDS_USED, ...STORAGE_FIELDS_IGNORED];
  for (const field of node.entries.keys()) {
    if (known.includes(field)) continue;
    const hint = didYouMean(
      field,
      known.filter((f) => !f.startsWith('_')),
    );
    fail(ctx.file, `${key}.${field}`, 'unknown storage field', hint ?? `storage fields are ${STORAGE_FIELDS_USED.join(', ')}`);
  }
  for (const field of STORAGE_FIELDS_IGNORED) if (node.entries.has(field)) ctx.ignored.push(`${key}.${field}`);
}

/** A storage field's value; a field written as null counts as absent. */
function storageField(node: StorageNode, field: string): YNode | undefined {
  const v = node.entries.get(field);
  return v === undefined || (v.kind === 'scalar' && v.value === null) ? undefined : v;
}

function storageMode(ctx: MountContext, key: string, node: StorageNode): StorageMode {
  const modeNode = storageField(node, 'mode');
  if (!modeNode) return 'MOUNT';
  const m = stringField(ctx, `${key}.mode`, modeNode, 'one of MOUNT, COPY, MOUNT_CACHED').toUpperCase();
  const found = MODES.find((x) => x === m);
  if (!found) {
    const hint = didYouMean(m, MODES);
    fail(ctx.file, `${key}.mode`, `unknown mode ${q(m)}`, `${hint ? `${hint} ` : ''}use MOUNT, COPY or MOUNT_CACHED`.trim());
  }
  return found;
}

function storageStore(ctx: MountContext, key: string, node: StorageNode): string | null {
  const storeNode = storageField(node, 'store');
  if (!storeNode) return null;
  const s = stringField(ctx, `${key}.store`, storeNode, 'a store name').toLowerCase();
  if (s === 'volume') {
    fail(ctx.file, `${key}.store`, 'store "volume" is a SkyPilot volume, which skysync does not manage', 'use a bucket store or a plain file mount for this path');
  }
  if (!STORES.includes(s)) {
    const c = closest(s, STORES);
    fail(ctx.file, `${key}.store`, `unknown store ${q(s)}`, `${c ? `did you mean ${q(c)}? ` : ''}use one of ${STORES.join(', ')}`);
  }
  return s;
}

function storagePersistent(ctx: MountContext, key: string, node: StorageNode): boolean {
  const persistent = storageField(node, 'persistent');
  if (!persistent) return true;
  if (persistent.kind !== 'scalar' || typeof persistent.value !== 'boolean') {
    fail(ctx.file, `${key}.persistent`, `expected true or false, got ${describe(persistent)}`, 'write persistent: true or persistent: false');
  }
  return persistent.value;
}

function storageName(ctx: MountContext, key: string, node: StorageNode): string | null {
  const nameNode = storageField(node, 'name');
  if (!nameNode) return null;
  const name = stringField(ctx, `${key}.name`, nameNode, 'a bucket name');
  if (name === '') return null;
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(name)) {
    fail(
      ctx.file,
      `${key}.name`,
      `name ${q(name)} is a URI`,
      'put an existing bucket URI in source (e.g. source: s3://mybucket) and give new buckets a plain name with store: set',
    );
  }
  return name;
}

/** A list of local paths, uploaded to the bucket root; SkyPilot takes only local paths here. */
function localSourceList(ctx: MountContext, key: string, dest: string, items: YNode[]): string[] {
  if (items.length === 0) fail(ctx.file, `${key}.source`, 'empty list', 'list at least one local path, or remove source');
  const seen = new Map<string, string>();
  return items.map((item, i) => {
    const ik = `${key}.source[${i}]`;
    const s = stringField(ctx, ik, item, 'a local path');
    if (urlScheme(s) !== '') fail(ctx.file, ik, `${q(s)} is a URI, but a source list holds local paths only`, 'use a single source: <URI> for a bucket, or list local paths');
    const local = localSource(ctx, ik, s);
    const base = path.basename(local.abs);
    const prev = seen.get(base);
    if (prev !== undefined) fail(ctx.file, ik, `${q(prev)} and ${q(s)} both land at ${dest}/${base}`, 'rename one of them or mount them separately');
    seen.set(base, s);
    return local.abs;
  });
}

/** A bucket URI as the source; FUSE mounts take a whole bucket (cos:// names region/bucket; https and hf may point inside). */
function bucketSource(ctx: MountContext, key: string, uri: string, mode: StorageMode): string {
  const scheme = uriSource(ctx, `${key}.source`, uri, STORAGE_URI_SCHEMES);
  const parts = uriParts(uri);
  const sub = (parts?.path ?? '').replace(/^\/+|\/+$/g, '');
  const subPath = scheme === 'cos' ? sub.includes('/') : scheme !== 'https' && scheme !== 'hf' && sub !== '';
  if (mode !== 'COPY' && subPath) {
    fail(ctx.file, `${key}.source`, `${mode} mode mounts a whole bucket, not a path inside one (${q(uri)})`, 'use mode: COPY, or give only the bucket as source');
  }
  return uri;
}

/** The sources of a storage mount, and whether they are local (uploaded to the bucket) rather than a bucket. */
function storageSources(ctx: MountContext, key: string, dest: string, node: StorageNode, mode: StorageMode): { sources: string[]; localSourced: boolean } {
  const sourceNode = storageField(node, 'source');
  if (!sourceNode) return { sources: [], localSourced: false };
  if (sourceNode.kind === 'seq') return { sources: localSourceList(ctx, key, dest, sourceNode.items), localSourced: true };
  const s = stringField(ctx, `${key}.source`, sourceNode, 'a local directory or a bucket URI');
  if (urlScheme(s) !== '') return { sources: [bucketSource(ctx, key, s, mode)], localSourced: false };
  const local = localSource(ctx, `${key}.source`, s);
  if (local.type === 'file') {
    fail(
      ctx.file,
      `${key}.source`,
      `${q(s)} is a file, and a storage source must be a directory`,
      `write source: [${s}] to upload the file into the bucket, or mount it directly as "${dest}: ${s}"`,
    );
  }
  return { sources: [local.abs], localSourced: true };
}

function storageMount(ctx: MountContext, key: string, dest: string, remote: string, node: StorageNode): FileMount {
  checkStorageFields(ctx, key, node);
  const mode = storageMode(ctx, key, node);
  const store = storageStore(ctx, key, node);
  const persistent = storagePersistent(ctx, key, node);
  const name = storageName(ctx, key, node);
  const { sources, localSourced } = storageSources(ctx, key, dest, node, mode);
  if (name === null && sources.length === 0) {
    fail(ctx.file, key, 'a storage mount needs a name or a source', 'add name: <bucket> and/or source: <local dir or bucket URI>');
  }
  if (localSourced && name === null) {
    fail(ctx.file, `${key}.source`, 'a local source is uploaded to a bucket, and no bucket name is given', 'add name: <bucket>');
  }
  if (!localSourced && sources.length > 0 && name !== null) {
    fail(ctx.file, `${key}.name`, 'name must not be set when source is a bucket URI (the URI names the bucket)', 'remove name');
  }
  return { kind: 'storage', key, dest, remote, name, sources, store, mode, persistent };
}

export function readFileMounts(node: YNode | undefined, ctx: MountContext): FileMount[] {
  if (node === undefined || (node.kind === 'scalar' && node.value === null)) return [];
  if (node.kind !== 'map') {
    fail(ctx.file, 'file_mounts', `expected a mapping of <path on node>: <source>, got ${describe(node)}`, 'write one "/remote/path: local/path" per line under it');
  }
  // Keyed by destination after substitution: two keys naming the same place keep the last (as SkyPilot's dict does).
  const out = new Map<string, FileMount>();
  for (const [writtenDest, value] of node.entries) {
    const key = `file_mounts.${writtenDest}`;
    const dest = substitute(writtenDest, ctx.vars);
    const remote = checkDest(ctx, key, dest);
    if (value.kind === 'map') {
      out.set(dest, storageMount(ctx, key, dest, remote, value));
      continue;
    }
    // An unquoted "~" is YAML's null, but as a source it can only mean the home directory.
    const isHome = value.kind === 'scalar' && value.value === null && value.text === '~';
    if (value.kind !== 'scalar' || (typeof value.value !== 'string' && !isHome)) {
      fail(
        ctx.file,
        key,
        `expected a local path, a bucket URI or a storage mapping, got ${describe(value)}`,
        `write e.g. "${writtenDest}: ~/local/path" or "${writtenDest}: s3://bucket/key" (quote a path that YAML reads as a number)`,
      );
    }
    const source = substitute(value.text, ctx.vars);
    if (source === '') fail(ctx.file, key, 'empty source', 'write a local path or a bucket URI');
    if (uriParts(source)) {
      if (source.endsWith('/')) fail(ctx.file, key, `source ${q(source)} ends with "/"`, 'remove the trailing slash');
      const scheme = uriSource(ctx, key, source, MOUNT_URI_SCHEMES);
      out.set(dest, { kind: 'uri', key, dest, remote, uri: source, scheme });
      continue;
    }
    const local = localSource(ctx, key, source);
    out.set(dest, { kind: 'local', key, dest, remote, source: local.abs, sourceType: local.type });
  }
  return [...out.values()];
}
