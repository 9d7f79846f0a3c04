// An SSH connection that dies (its sshd session killed) must end whatever waits on it, however it waits. ssh2
// drops the writes of a closed channel without calling them back, and keeps taking new ones as if the window
// might open again: a writer waiting for them to drain waits forever (issue 22: no command may wait forever).
// - `run` (the Node upload to a remote without one) while the remote reads nothing.
// - the agent's connection, written to after its channel closed with nothing pending (a push's data pump between
//   two blocks when the connection died: the kill-points hang, seed 1399600890, attempt 49).

import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, Frame, makeHello } from '@skysync/protocol';
import { connectHost, resolveHost, run, SshTarget } from '@skysync/transport';
import { kill, sleep, sshdSessionPids } from './helpers/faults.js';
import { sshSkipReason, startNodes, type SshCluster } from './helpers/sshd.js';

const skip = sshSkipReason();
if (skip) console.log(`SKIP ssh-closed-channel.test.ts: ${skip}`);

/** How `p` settled within `ms`, or that it had not. */
function within<T>(p: Promise<T>, ms: number): Promise<string> {
  return Promise.race([
    p.then(
      () => 'ended',
      (e: Error) => `failed: ${e.message}`,
    ),
    sleep(ms).then(() => `still waiting ${ms / 1000} s after the connection died`),
  ]);
}

describe.skipIf(skip !== null)('an SSH connection that dies under a writer', () => {
  let cluster: SshCluster;
  const killSession = (): number => kill(sshdSessionPids(fs.statSync(cluster.nodes[0]!.home).uid));
  beforeAll(async () => {
    cluster = await startNodes(1, { cluster: 'sky-chclose' });
  }, 120_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('run(): the upload settles once the sshd session is killed, its writes still waiting for the window', async () => {
    const node = cluster.nodes[0]!;
    const { client } = await connectHost(await resolveHost(node.name, { configFile: cluster.sshConfig }), { configFile: cluster.sshConfig });
    try {
      // 64 MiB to a command that never reads: the channel's window (2 MiB) fills and the upload waits to drain.
      const upload = run(client, 'exec sleep 30', [Buffer.alloc(64 << 20, 1)]);
      expect(await within(upload, 1500), 'nothing reads the upload: it cannot have ended').toMatch(/^still waiting/);
      expect(killSession(), 'sshd session processes killed').toBeGreaterThan(0);
      expect(await within(upload, 15_000)).toMatch(/^(ended|failed)/);
    } finally {
      client.destroy();
    }
  }, 60_000);

  it("the agent's connection: a send after the channel closed fails at once instead of waiting to drain", async () => {
    const node = cluster.nodes[0]!;
    const target = new SshTarget(node.name, { configFile: cluster.sshConfig, control: false });
    target.retain();
    try {
      const hello = makeHello({ role: 'client', software: 'test', compression: ['none'], native: true });
      const prelude = Connection.prelude([[Frame.Hello, hello]]);
      const channel = await target.openAgent(prelude);
      const conn = new Connection(channel.input, channel.output, undefined, prelude);
      await conn.expect(Frame.Hello);
      expect(killSession(), 'sshd session processes killed').toBeGreaterThan(0);
      // The end of the agent's output: the channel has closed, nothing of ours pending.
      expect(await within(conn.next(), 15_000)).toMatch(/^(ended|failed)/);
      // Frames the size of a push's data blocks, more than the connection keeps in flight.
      const sending = (async () => {
        for (let i = 0; i < 16; i++) await conn.send(Frame.Data, Buffer.alloc(1 << 20, i));
      })();
      expect(await within(sending, 15_000)).toMatch(/^failed: /);
    } finally {
      await target.close();
    }
  }, 120_000);
});
