// A cluster where something went wrong, through real OpenSSH servers: a node that cannot be reached ends every
// command within the connect timeout (cold and warm connections), and a push that failed part-way converges on
// the next one.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostBlock as sshHostBlock, type HostBlockOptions, sshSkipReason, startNodes, type SshCluster, type SshNode } from './helpers/sshd.js';
import { diffItems, walk, type Item } from './helpers/tree.js';

const skip = sshSkipReason();
if (skip) console.log(`SKIP cluster-failures.test.ts: ${skip}`);
const BIN = path.resolve('packages/cli/dist/bin.js');

let work: string;
let cluster: SshCluster;
let cfg: string;
let deadPort: number;
let silent: net.Server;

function skysync(args: string[], opts: { env?: NodeJS.ProcessEnv; timeout?: number } = {}) {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [BIN, '-F', cfg, ...args], {
    encoding: 'utf8',
    timeout: opts.timeout ?? 60_000,
    cwd: work,
    env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state'), SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: '0', ...opts.env },
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
}

function write(p: string, content: string | Buffer): void {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
}

/** A port nothing listens on: a node whose sshd is stopped. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** A node's Host block with this cluster's client key. */
function hostBlock(alias: string, n: Pick<SshNode, 'user' | 'port'>, opts: HostBlockOptions = {}): string {
  return sshHostBlock(alias, n, cluster.clientKey, opts);
}

describe.skipIf(!!skip)('a cluster after a failure', () => {
  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-clfail-'));
    fs.chmodSync(work, 0o755);
    cluster = await startNodes(3, { cluster: 'fx', strictHostKeyChecking: 'no' });
    deadPort = await closedPort();
    // A host that takes the TCP connection and never says a word (a wedged sshd): only the connect timeout ends it.
    silent = net.createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const silentPort = (silent.address() as net.AddressInfo).port;
    const [h, w1, w2] = cluster.nodes as [SshNode, SshNode, SshNode];
    // `fx`: three live nodes. `down`: the same head and worker1, worker2's sshd stopped. `badkey`: the head's
    // host key changed (known_hosts holds another key), workers fine.
    const known = path.join(work, 'known_hosts');
    fs.writeFileSync(known, `[127.0.0.1]:${h.port} ${w1.hostKeyPub}\n`);
    cfg = path.join(work, 'ssh_config');
    fs.writeFileSync(
      cfg,
      [
        hostBlock('fx', h),
        hostBlock('fx-worker1', w1),
        hostBlock('fx-worker2', w2),
        hostBlock('down', h),
        hostBlock('down-worker1', w1),
        hostBlock('down-worker2', { user: w2.user, port: deadPort }),
        hostBlock('badkey', h, { strict: 'yes', knownHosts: known }),
        hostBlock('badkey-worker1', w1),
        hostBlock('mute', h),
        hostBlock('mute-worker1', { user: w1.user, port: silentPort }),
        'Host *\n  ConnectTimeout 5\n',
      ].join('\n'),
    );
    const proj = path.join(work, 'proj');
    write(path.join(proj, 'train.py'), 'print("training")\n');
    write(path.join(proj, 'data/big.bin'), Buffer.alloc(256 << 10, 7));
    write(path.join(work, 'task.yaml'), ['workdir: ./proj', 'num_nodes: 3', 'setup: echo setup', 'run: echo ran-$SKYPILOT_NODE_RANK', ''].join('\n'));
    write(path.join(work, 'two.yaml'), ['workdir: ./proj', 'num_nodes: 2', 'run: echo ran-$SKYPILOT_NODE_RANK', ''].join('\n'));
  }, 180_000);

  afterAll(async () => {
    silent?.close();
    await cluster?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  const unreachable: Array<[string, string[]]> = [
    ['exec without a task', ['exec', 'down', '--', 'echo hi']],
    ['exec with a task', ['exec', 'down', 'task.yaml']],
    ['push', ['push', 'down', '-w', 'proj']],
    ['launch', ['launch', 'down', 'task.yaml']],
    ['pull', ['pull', 'down-worker2:~/x', 'pulled']],
    ["exec, the head's host key changed", ['exec', 'badkey', '--', 'echo hi']],
    ["push, the head's host key changed", ['push', 'badkey', '-w', 'proj']],
    ['exec, a worker that never answers', ['exec', 'mute', '--', 'echo hi']],
    ['launch, a worker that never answers', ['launch', 'mute', 'two.yaml']],
  ];
  for (const warm of [false, true]) {
    it.each(unreachable)(`${warm ? 'warm' : 'cold'}: %s ends with the error and a non-zero exit`, (_what, args) => {
      const env = { SKYSYNC_CONTROL_PERSIST: warm ? '30' : '0' };
      if (warm) skysync(['exec', args[1]!.split(':')[0]!.replace(/-worker2$/, ''), '--', 'true'], { env });
      const r = skysync(args, { env, timeout: 30_000 });
      expect(r.signal, `timed out: ${r.stderr}`).toBeNull();
      expect(r.code, r.stderr).not.toBe(0);
      expect(r.stderr).toMatch(/connection refused|host key|timed out/i);
      expect(r.ms).toBeLessThan(15_000);
    });
  }

  describe('convergence after a failed or partial push (head relay on)', () => {
    let cvCfg: string;
    const src = (): string => path.join(work, 'cvproj');
    const setCluster = (workerDown: boolean): void => {
      const [h, w1, w2] = cluster.nodes as [SshNode, SshNode, SshNode];
      // Rewritten in place: the same aliases, so the client's state for each node carries over.
      fs.writeFileSync(
        cvCfg,
        [hostBlock('cv', h), hostBlock('cv-worker1', w1), hostBlock('cv-worker2', workerDown ? { user: w2.user, port: deadPort } : w2), 'Host *\n  ConnectTimeout 5\n'].join('\n'),
      );
    };
    const push = (...extra: string[]) => {
      const r = spawnSync(process.execPath, [BIN, '-F', cvCfg, 'push', 'cv', '-w', src(), '--dest', '~/cv', '--json', ...extra], {
        encoding: 'utf8',
        timeout: 60_000,
        cwd: work,
        env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state'), SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: '0', SKYSYNC_RELAY: '1' },
      });
      const json = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
      return {
        code: r.status,
        stderr: r.stderr,
        json,
        moved: (json.nodes ?? []).map((n: { workdir: { filesChanged: number; bytesLiteral: number } | null }) =>
          n.workdir ? n.workdir.filesChanged + n.workdir.bytesLiteral : -1,
        ),
      };
    };
    const exact = (): void => {
      const want = new Map([...walk(src())].filter(([, it]) => it.type !== 'dir')) as Map<string, Item>;
      for (const n of cluster.nodes) {
        const got = new Map([...walk(path.join(n.home, 'cv'))].filter(([, it]) => it.type !== 'dir')) as Map<string, Item>;
        expect(diffItems(want, got, { mtime: true }), n.name).toEqual([]);
      }
    };

    beforeAll(() => {
      cvCfg = path.join(work, 'cv_config');
      for (let i = 0; i < 40; i++) write(path.join(src(), `src/m${i}.py`), `X = ${i}\n`);
      // Enough literal bytes for the workers to take theirs from the head.
      write(path.join(src(), 'weights.bin'), randomBytes(3 << 20));
    });

    it('a push with one worker down, then: the next leaves every node exact and the one after moves nothing', () => {
      setCluster(true);
      const failed = push();
      expect(failed.code, failed.stderr).not.toBe(0);
      setCluster(false);
      const healed = push();
      expect(healed.code, healed.stderr).toBe(0);
      exact();
      for (let round = 0; round < 3; round++) {
        const again = push();
        expect(again.code, again.stderr).toBe(0);
        expect(again.moved, `round ${round}`).toEqual([0, 0, 0]);
      }
    });

    it('push --head-only, then the whole cluster: the head is not re-planned, and the next push moves nothing', () => {
      write(path.join(src(), 'src/m1.py'), 'X = "changed"\n');
      write(path.join(src(), 'weights.bin'), randomBytes(3 << 20));
      const head = push('--head-only');
      expect(head.code, head.stderr).toBe(0);
      const all = push();
      expect(all.code, all.stderr).toBe(0);
      expect(all.json.nodes[0].workdir.filesChanged).toBe(0);
      expect(all.json.nodes[1].workdir.filesChanged).toBe(2);
      exact();
      for (let round = 0; round < 2; round++) expect(push().moved, `round ${round}`).toEqual([0, 0, 0]);
    });
  });
});
