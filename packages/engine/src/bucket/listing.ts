// What a bucket mount holds, as the client sees it with the user's credentials: one object (the URI names a key
// that exists: a file, as SkyPilot decides it) or every object under the URI's path (a directory). Only this side
// ever lists or holds credentials; the nodes get the listing and, for what they lack, read grants (grants.ts).
// A prefix is listed page by page while the nodes already compare and fetch the first pages: every node reads the
// same listing, from its start, as far as it has come.

import type { ObjectInfo, ObjectStore, StoreUri } from '@skysync/store';

export interface ListedObject {
  /** The object's path under the destination (the key without the prefix). */
  path: string;
  info: ObjectInfo;
}

export interface BucketListing {
  uri: StoreUri;
  /** 'object': the URI names one object, placed as a file; 'prefix': everything under it, placed as a directory. */
  kind: 'object' | 'prefix';
  /** The listing's pages from the first, each as soon as the store gave it; throws what the listing failed with. */
  pages(): AsyncIterable<ListedObject[]>;
  /** Resolves with every object once the listing is complete. */
  complete(): Promise<ListedObject[]>;
  /** The key of the object at `path`. */
  keyOf(path: string): string;
  /** What the listing said of the object at `path` (an object mount has one, whatever the node names it). */
  infoOf(path: string): ObjectInfo | undefined;
}

/** The store for a URI, with the endpoint and credentials of this client's environment. */
export async function openStoreFor(uri: StoreUri): Promise<ObjectStore> {
  // Loaded only for bucket mounts: the SDKs cost every other command startup time.
  const { openObjectStore } = await import('@skysync/store/open');
  const token = process.env.GOOGLE_OAUTH_ACCESS_TOKEN;
  // An access token given this way (as gcloud's own --access-token-file, or Terraform) is what read grants carry.
  const accessToken = token ? async () => ({ token, expiresAtMs: Date.now() + 30 * 60 * 1000 }) : undefined;
  return openObjectStore(uri, { gcs: { ...(accessToken ? { accessToken } : {}) } });
}

/** A listing that grows page by page; readers wait for the pages they have not seen yet. */
class GrowingListing {
  readonly pages: ListedObject[][] = [];
  readonly byPath = new Map<string, ObjectInfo>();
  private ended = false;
  private error: unknown = null;
  private waiting: Array<() => void> = [];

  add(page: ListedObject[]): void {
    this.pages.push(page);
    for (const o of page) this.byPath.set(o.path, o.info);
    this.wake();
  }

  end(error: unknown = null): void {
    this.ended = true;
    this.error = error;
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiting.splice(0)) w();
  }

  async *read(): AsyncIterable<ListedObject[]> {
    for (let i = 0; ; i++) {
      while (i >= this.pages.length && !this.ended) await new Promise<void>((resolve) => this.waiting.push(resolve));
      if (i < this.pages.length) {
        yield this.pages[i]!;
        continue;
      }
      if (this.error) throw this.error;
      return;
    }
  }
}

/**
 * Decides object or prefix (a bucket check and, for a path not ending in `/`, a head request) and starts listing;
 * resolves before the listing is complete. A failure to list later pages comes out of `pages()` / `complete()`.
 */
export async function listMount(store: ObjectStore): Promise<BucketListing> {
  const { uri } = store;
  await store.checkBucket();
  const path = uri.prefix;
  if (path !== '' && !path.endsWith('/')) {
    const object = await store.head(path);
    if (object) {
      const only = [{ path: lastName(path), info: object }];
      return {
        uri,
        kind: 'object',
        pages: async function* () {
          yield only;
        },
        complete: async () => only,
        keyOf: () => path,
        infoOf: () => object,
      };
    }
  }
  const prefix = path === '' || path.endsWith('/') ? path : `${path}/`;
  const growing = new GrowingListing();
  const listed = (async () => {
    let page: ListedObject[] = [];
    // The store's own pages (1000 keys) are what arrives at once; a page goes out as soon as it is complete.
    const PAGE = 1000;
    for await (const info of store.list(prefix)) {
      page.push({ path: info.key.slice(prefix.length), info });
      if (page.length >= PAGE) {
        growing.add(page);
        page = [];
      }
    }
    if (page.length) growing.add(page);
  })().then(
    () => growing.end(),
    (e) => growing.end(e),
  );
  const complete = listed.then(async () => {
    const all: ListedObject[] = [];
    for await (const page of growing.read()) all.push(...page);
    return all;
  });
  complete.catch(() => {});
  return { uri, kind: 'prefix', pages: () => growing.read(), complete: () => complete, keyOf: (p) => prefix + p, infoOf: (p) => growing.byPath.get(p) };
}

function lastName(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1);
}
