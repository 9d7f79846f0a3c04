// A bucket fetch's failures that are the node's own (its disk, its rights, its link to the store) are one line for
// the mount; failures of single objects stay listed one by one.
import { describe, expect, it } from 'vitest';
import { nodeCause } from '../src/bucket/mount.js';

const f = (path: string, error: string) => ({ path, error });

describe("a bucket fetch's failures", () => {
  it('one line for a cause of the node, naming how many objects and the first one; the rest listed', () => {
    const failed = [
      f('a', 'refused: the key has an empty, "." or ".." component'),
      f('b.bin', 'ENOSPC: no space left on device, write'),
      f('c.bin', 'not fetched: the disk filled up (ENOSPC)'),
    ];
    const r = nodeCause(failed, '~/data');
    expect(r.error).toBe(
      "2 objects not placed at ~/data: the node's disk is full there; free space (or mount the bucket on a larger disk) and run again: what was placed stays (b.bin: ENOSPC: no space left on device, write)",
    );
    expect(r.rest).toEqual([failed[0]]);
  });

  it("the store refusing or not answering the node's reads", () => {
    expect(nodeCause([f('k', 's3://b/k: the store refused the read grant (HTTP 403)')], '/d').error).toMatch(/^1 object not placed at \/d: the store refused the node's reads/);
    expect(nodeCause([f('k', 's3://b/k: the store does not answer (ECONNREFUSED)')], '/d').error).toMatch(/the node cannot reach the store/);
    expect(nodeCause([f('k', 's3://b/k: the object changed since the grant was made')], '/d')).toEqual({
      error: null,
      rest: [f('k', 's3://b/k: the object changed since the grant was made')],
    });
  });
});
