// What a bucket mount holds, as the client sees it with the user's credentials: one object (the URI names a key
// that exists: a file, as SkyPilot decides it) or every object under the URI's path (a directory). Only this side
// ever lists or holds credentials; the nodes get the listing and, for what they lack, read grants (grants.ts).

import type { ObjectInfo, ObjectStore, StoreUri } from '@skysync/store';

export interface BucketListing {
  uri: StoreUri;
  /** 'object': the URI names one object, placed as a file; 'prefix': everything under it, placed as a directory. */
  kind: 'object' | 'prefix';
  /** Listed objects, each with its path under the destination (the key without the prefix). */
  objects: Array<{ path: string; info: ObjectInfo }>;
  /** The key of the object at `path`. */
  keyOf(path: string): string;
}

/** The store for a URI, with the endpoint and credentials of this client's environment. */
export async function openStoreFor(uri: StoreUri): Promise<ObjectStore> {
  // Loaded only for bucket mounts: the SDKs cost every other command startup time.
  const { openObjectStore } = await import('@skysync/store/cloud');
  const token = process.env.GOOGLE_OAUTH_ACCESS_TOKEN;
  // An access token given this way (as gcloud's own --access-token-file, or Terraform) is what read grants carry.
  const accessToken = token ? async () => ({ token, expiresAtMs: Date.now() + 30 * 60 * 1000 }) : undefined;
  return openObjectStore(uri, { gcs: { ...(accessToken ? { accessToken } : {}) } });
}

export async function listMount(store: ObjectStore): Promise<BucketListing> {
  const { uri } = store;
  await store.checkBucket();
  const path = uri.prefix;
  if (path !== '' && !path.endsWith('/')) {
    const object = await store.head(path);
    if (object) return { uri, kind: 'object', objects: [{ path: lastName(path), info: object }], keyOf: () => path };
  }
  const prefix = path === '' || path.endsWith('/') ? path : `${path}/`;
  const objects: BucketListing['objects'] = [];
  for await (const info of store.list(prefix)) objects.push({ path: info.key.slice(prefix.length), info });
  return { uri, kind: 'prefix', objects, keyOf: (p) => prefix + p };
}

function lastName(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1);
}
