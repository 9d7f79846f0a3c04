// Read grants for a mount's objects, made once per object for all nodes of a command and kept in this process's
// memory only. Each is a presigned URL (S3) or a short-lived token with a URL pinned to the generation (GCS).

import type { ObjectInfo, ObjectStore, ReadGrant } from '@skysync/store';

/** Grants made at once (a GCS grant may wait for a token; an S3 one is a local signature). */
const AT_ONCE = 16;

export class GrantMaker {
  private readonly made = new Map<string, Promise<ReadGrant>>();
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly store: ObjectStore) {}

  /**
   * The grant for `key`, for the size and version the listing gave (`known`): shared by every node that asks. An
   * object replaced since the listing fails on the node as changed, and the next run fetches the new version.
   */
  grant(key: string, known: ObjectInfo): Promise<ReadGrant> {
    let g = this.made.get(key);
    if (!g) {
      g = this.limited(() => this.store.readGrant(key, { known }));
      this.made.set(key, g);
    }
    return g;
  }

  private async limited<T>(work: () => Promise<T>): Promise<T> {
    if (this.active >= AT_ONCE) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await work();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}
