// An upload through `run` (the Node binary for a remote that has none and cannot download it goes this way) whose
// SSH connection dies while the remote reads nothing: `run` ends with the connection instead of waiting forever for
// its writes to drain (ssh2 drops the writes a closed channel holds without calling them back). Issue 22: no
// command may wait forever.

import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectHost, resolveHost, run } from '@skysync/transport';
import { kill, sleep, sshdSessionPids } from './helpers/faults.js';
import { sshSkipReason, startNodes, type SshCluster } from './helpers/sshd.js';

const skip = sshSkipReason();
if (skip) console.log(`SKIP ssh-upload-kill.test.ts: ${skip}`);

describe.skipIf(skip !== null)('run() when the connection dies during its upload', () => {
  let cluster: SshCluster;
  beforeAll(async () => {
    cluster = await startNodes(1, { cluster: 'sky-upkill' });
  }, 120_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('settles once the sshd session is killed, with the writes still waiting for the window', async () => {
    const node = cluster.nodes[0]!;
    const { client } = await connectHost(await resolveHost(node.name, { configFile: cluster.sshConfig }), { configFile: cluster.sshConfig });
    try {
      // 64 MiB to a command that never reads: the channel's window (2 MiB) fills and the upload waits to drain.
      const upload = run(client, 'exec sleep 30', [Buffer.alloc(64 << 20, 1)]);
      let settled = false;
      void upload.then(
        () => (settled = true),
        () => (settled = true),
      );
      await sleep(1500);
      expect(settled, 'the upload cannot have finished: nothing reads it').toBe(false);
      const uid = fs.statSync(node.home).uid;
      expect(kill(sshdSessionPids(uid)), 'sshd session processes killed').toBeGreaterThan(0);
      const outcome = await Promise.race([
        upload.then(
          (r) => `ended: exit ${r.code}`,
          (e: Error) => `failed: ${e.message}`,
        ),
        sleep(15_000).then(() => 'still waiting 15 s after the connection died'),
      ]);
      expect(outcome).toMatch(/^(ended|failed)/);
    } finally {
      client.destroy();
    }
  }, 60_000);
});
