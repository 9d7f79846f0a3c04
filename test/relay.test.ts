// The head relay, through real OpenSSH servers (one Unix user per node): a cluster push carries the literal data
// over the client's link once, to the head, and the workers take theirs from the head's chunk server. Falls back
// to the client when the relay cannot be reached, is turned off, or is refused; the chunk server answers only
// the token, and only with chunk bytes by id.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterHostBlocks, sshSkipReason, startNodes, type SshCluster } from './helpers/sshd.js';
import { diffItems, walk, type Item } from './helpers/tree.js';

const skip = sshSkipReason();
if (skip) console.log(`SKIP relay.test.ts: ${skip}`);
const BIN = path.resolve('packages/cli/dist/bin.js');
const MiB = 1024 * 1024;

let work: string;
let proj: string;
let cluster: SshCluster;
let cfg: string;

function skysync(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [BIN, '-F', cfg, ...args], {
    encoding: 'utf8',
    timeout: 180_000,
    cwd: work,
    env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state'), SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: '0', ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

// biome-ignore lint/suspicious/noExplicitAny: the CLI's --json report, read field by field by the assertions
function json(out: string): any {
  const j = JSON.parse(out.trim().split('\n').pop()!);
  if (process.env.RELAY_TEST_DEBUG)
    console.log(
      JSON.stringify(
        {
          bytesWire: j.bytesWire,
          bytesRelay: j.bytesRelay,
          ms: j.durationMs,
          nodes: j.nodes.map((n: { node: string; workdir: Record<string, unknown> }) => ({
            node: n.node,
            lit: n.workdir.bytesLiteral,
            wire: n.workdir.bytesWire,
            relay: n.workdir.relay,
            ms: n.workdir.durationMs,
          })),
        },
        null,
        1,
      ),
    );
  return j;
}

function files(dir: string): Map<string, Item> {
  return new Map([...walk(dir)].filter(([, it]) => it.type !== 'dir'));
}

function write(p: string, content: string | Buffer): void {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
}

/** Every node holds exactly the source (an independent SHA-256 walk, not the code under test's BLAKE3). */
function expectConverged(): void {
  const want = files(proj);
  for (const n of cluster.nodes) expect(diffItems(want, files(path.join(n.home, 'sky_workdir')), { mtime: true }), n.name).toEqual([]);
}

/** Puts a line at the top of the node user's shell start files (sshd runs the agent through the login shell). */
function setNodeEnv(home: string, line: string | null): void {
  for (const f of ['.bashrc', '.profile']) {
    const p = path.join(home, f);
    const st = fs.statSync(p);
    const body = fs.readFileSync(p, 'utf8').replace(/^# relay-test\n.*\n/m, '');
    fs.writeFileSync(p, (line ? `# relay-test\n${line}\n` : '') + body);
    fs.chownSync(p, st.uid, st.gid);
  }
}

describe.skipIf(!!skip)('head relay on a SkyPilot-shaped cluster', () => {
  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-relay-'));
    fs.chmodSync(work, 0o755);
    cluster = await startNodes(3, { cluster: 'sky-r', strictHostKeyChecking: 'no' });
    cfg = path.join(work, 'ssh_config');
    fs.writeFileSync(cfg, clusterHostBlocks('sky-r', cluster.nodes, cluster.clientKey));
    proj = path.join(work, 'proj');
    for (let i = 0; i < 300; i++) write(path.join(proj, `src/m${i % 7}/f${i}.py`), `# module ${i}\n${'x = 1\n'.repeat(i % 50)}`);
    // Random bytes: what the client sends is about what it reads, so wire bytes count copies of the data.
    for (let i = 0; i < 3; i++) write(path.join(proj, `data/shard${i}.bin`), randomBytes(3 * MiB));
    write(path.join(proj, 'README.md'), 'relay\n');
  }, 180_000);

  afterAll(async () => {
    await cluster?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('an initial push: the workers take every literal chunk from the head; the client sends the data once', () => {
    const r = skysync(['push', 'sky-r', '-w', proj, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/relay/);
    const j = json(r.stdout);
    // biome-ignore lint/suspicious/noExplicitAny: the per-node stats of the --json report
    const [head, ...workers] = j.nodes.map((n: { workdir: any }) => n.workdir);
    expect(head.relay).toMatchObject({ role: 'head' });
    expect(head.bytesLiteral).toBeGreaterThan(9 * MiB);
    for (const w of workers) {
      expect(w.relay).toMatchObject({ role: 'worker', error: null });
      expect(w.relay.chunks).toBeGreaterThan(0);
      // Every literal byte came from the head; the client sent the plan and nothing else.
      expect(w.bytesRelay).toBe(head.bytesLiteral);
      expect(w.bytesLiteral).toBe(0);
      expect(w.bytesWire).toBeLessThan(head.bytesWire / 20);
    }
    // One copy of the data on the client's link, not three.
    expect(j.bytesWire).toBeLessThan(head.bytesLiteral * 1.2);
    expect(j.bytesRelay).toBe(2 * head.bytesLiteral);
    expectConverged();
  });

  it('a later push relays only a large change; a small one goes straight from the client', () => {
    write(path.join(proj, 'data/shard3.bin'), randomBytes(4 * MiB));
    fs.writeFileSync(path.join(proj, 'README.md'), 'relay v2\n');
    fs.rmSync(path.join(proj, 'src/m0/f0.py'));
    const big = skysync(['push', 'sky-r', '-w', proj, '--json']);
    expect(big.code, big.stderr).toBe(0);
    const jb = json(big.stdout);
    for (const n of jb.nodes.slice(1)) {
      expect(n.workdir.bytesRelay).toBeGreaterThanOrEqual(4 * MiB);
      expect(n.workdir.bytesLiteral).toBe(0);
      expect(n.workdir.filesDeleted).toBe(1);
    }
    expectConverged();

    fs.writeFileSync(path.join(proj, 'README.md'), 'relay v3\n');
    const small = skysync(['push', 'sky-r', '-w', proj, '--json']);
    expect(small.code, small.stderr).toBe(0);
    const js = json(small.stdout);
    expect(js.bytesRelay).toBe(0);
    for (const n of js.nodes) expect(n.workdir.relay?.role ?? 'none').not.toBe('worker');
    expectConverged();
  });

  it('a worker that missed pushes is brought up to date from the head, finding what it holds by itself', () => {
    // worker2 loses everything; the others are current, so the head has nothing to change and still serves.
    fs.rmSync(path.join(cluster.nodes[2]!.home, 'sky_workdir'), { recursive: true, force: true });
    fs.rmSync(path.join(cluster.nodes[2]!.home, '.skysync/state'), { recursive: true, force: true });
    const r = skysync(['push', 'sky-r', '-w', proj, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = json(r.stdout);
    expect(j.nodes[0].workdir.filesChanged).toBe(0);
    expect(j.nodes[1].workdir.filesChanged).toBe(0);
    const w2 = j.nodes[2].workdir;
    expect(w2.relay).toMatchObject({ role: 'worker', error: null });
    expect(w2.bytesRelay).toBeGreaterThan(12 * MiB);
    expect(w2.bytesLiteral).toBe(0);
    expectConverged();
  });

  it('falls back to the client when the head cannot be reached, saying so in one line per worker', () => {
    for (const n of cluster.nodes) fs.rmSync(path.join(n.home, 'sky_workdir/data'), { recursive: true, force: true });
    fs.rmSync(path.join(work, 'state'), { recursive: true, force: true });
    // A name that never resolves (RFC 2606), so connecting fails however this machine's network is set up.
    const r = skysync(['push', 'sky-r', '-w', proj, '--json'], { SKYSYNC_RELAY_ADDRESSES: 'relay.invalid' });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stderr.split('\n').filter((l) => /relay/.test(l));
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(l).toMatch(/sky-r-worker\d: relay from the head: could not reach the head's relay .*; [\d.]+ MiB came from the client instead/);
    const j = json(r.stdout);
    for (const n of j.nodes.slice(1)) {
      expect(n.workdir.bytesRelay).toBe(0);
      expect(n.workdir.bytesLiteral).toBeGreaterThan(9 * MiB);
    }
    expectConverged();
  });

  it('falls back when the head has the relay turned off (SKYSYNC_RELAY=0 there), and --no-relay skips it', () => {
    for (const n of cluster.nodes) fs.rmSync(path.join(n.home, 'sky_workdir/data'), { recursive: true, force: true });
    fs.rmSync(path.join(work, 'state'), { recursive: true, force: true });
    setNodeEnv(cluster.nodes[0]!.home, 'export SKYSYNC_RELAY=0');
    try {
      const r = skysync(['push', 'sky-r', '-w', proj, '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/relay: sky-r cannot serve the other nodes \(turned off on that node \(SKYSYNC_RELAY\)\); each gets its data from the client/);
      const j = json(r.stdout);
      expect(j.bytesRelay).toBe(0);
      expect(j.nodes[0].workdir.relay).toBeUndefined();
      expectConverged();
    } finally {
      setNodeEnv(cluster.nodes[0]!.home, null);
    }
    for (const n of cluster.nodes) fs.rmSync(path.join(n.home, 'sky_workdir/data'), { recursive: true, force: true });
    fs.rmSync(path.join(work, 'state'), { recursive: true, force: true });
    const off = skysync(['push', 'sky-r', '-w', proj, '--json', '--no-relay']);
    expect(off.code, off.stderr).toBe(0);
    const j = json(off.stdout);
    expect(j.bytesRelay).toBe(0);
    for (const n of j.nodes) expect(n.workdir.relay).toBeUndefined();
    expectConverged();
  });

  it('the chunk server refuses a wrong token or a bad greeting, and serves only chunks it holds, by id and length', async () => {
    // Open a relay on the head by hand, as a client does for a cluster push, and hold it open.
    const { openSession } = await import('@skysync/engine');
    const { parseTarget } = await import('@skysync/transport');
    const { Frame, MAGIC, encodeFrame, PushState } = await import('@skysync/protocol');
    const target = parseTarget('sky-r', { configFile: cfg });
    const s = await openSession(target, ['none']);
    try {
      await s.agentHello;
      await s.conn.sendJson(Frame.Begin, { op: 'push', dest: '~/sky_workdir', base: null, chunkParams: { minSize: 4096, avgSize: 16384, maxSize: 65536 }, relay: true });
      const state = PushState.decode((await s.conn.expect(Frame.State)).payload);
      expect(state.relay.token).toMatch(/^[0-9a-f]{64}$/);
      expect(state.relay.addresses.length).toBeGreaterThan(0);
      const port: number = state.relay.port;
      // An empty plan, as a client sends a head with nothing to change: its push ends, so the server knows that
      // what its records do not hold it never will.
      await s.conn.sendJson(Frame.Plan, { mode: 'data', compression: 'none', deleteMode: 'none', dryRun: false });
      await s.conn.send(Frame.PlanEnd, Buffer.alloc(0));
      await s.conn.send(Frame.DataEnd, Buffer.alloc(0));
      await s.conn.expect(Frame.Done);

      /** Sends `bytes`, returns everything the server sent until it closed (or 5 s passed). */
      const exchange = (bytes: Buffer): Promise<Buffer> =>
        new Promise((resolve) => {
          const sock = net.connect({ host: '127.0.0.1', port });
          const got: Buffer[] = [];
          sock.on('data', (d) => got.push(d));
          sock.on('error', () => {});
          const timer = setTimeout(() => sock.destroy(), 5000);
          sock.on('close', () => {
            clearTimeout(timer);
            resolve(Buffer.concat(got));
          });
          sock.write(bytes);
        });
      const hello = (token: string) => Buffer.concat([MAGIC, encodeFrame(Frame.RelayHello, Buffer.from(JSON.stringify({ token, compression: ['none'] })))]);
      const want = (refs: Buffer[]) => Buffer.concat([encodeFrame(Frame.RelayWant, Buffer.concat(refs)), encodeFrame(Frame.PlanEnd, Buffer.alloc(0))]);
      const frames = (b: Buffer): Array<{ type: number; payload: Buffer }> => {
        expect(b.subarray(0, MAGIC.length).equals(MAGIC)).toBe(true);
        const out = [];
        for (let o = MAGIC.length; o + 5 <= b.length; ) {
          const len = b.readUInt32LE(o);
          out.push({ type: b[o + 4]!, payload: b.subarray(o + 5, o + 4 + len) });
          o += 4 + len;
        }
        return out;
      };
      const ref = (content: Buffer, len = content.length) => {
        const r = Buffer.alloc(36);
        // The chunk id of a file smaller than the minimum chunk is BLAKE3 of its bytes: ask the addon.
        blake3(content).copy(r);
        r.writeUInt32LE(len, 32);
        return r;
      };
      const { createRequire } = await import('node:module');
      const addon = createRequire(import.meta.url)(path.resolve('native/index.cjs'));
      const blake3 = (b: Buffer): Buffer => addon.blake3(b);

      // A wrong token (of the right length, and the right one with a byte changed): refused, nothing served.
      const wrong = frames(await exchange(Buffer.concat([hello(randomBytes(32).toString('hex')), want([ref(Buffer.from('relay v3\n'))])])));
      expect(wrong.map((f) => f.type)).toEqual([Frame.Error]);
      expect(JSON.parse(wrong[0]!.payload.toString()).code).toBe('relay-auth');
      const nearly = state.relay.token.slice(0, -1) + (state.relay.token.endsWith('0') ? '1' : '0');
      expect(frames(await exchange(hello(nearly))).map((f) => f.type)).toEqual([Frame.Error]);
      // Not our protocol at all (an HTTP probe): closed without an answer.
      expect((await exchange(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))).length).toBe(0);

      // The right token: a chunk the head holds is served (README.md, placed by the pushes above)...
      const readme = fs.readFileSync(path.join(proj, 'README.md'));
      expect(readme.toString()).toBe('relay v3\n');
      const ok = frames(await exchange(Buffer.concat([hello(state.relay.token), want([ref(readme)])])));
      expect(ok.map((f) => f.type)).toEqual([Frame.RelayHello, Frame.Data, Frame.DataEnd]);
      expect(ok[1]!.payload.equals(readme)).toBe(true);
      // ...but not with another length (that would be other bytes of the file), nor a chunk it does not hold.
      for (const bad of [ref(readme, readme.length + 100), ref(randomBytes(100))]) {
        const f = frames(await exchange(Buffer.concat([hello(state.relay.token), want([bad])])));
        expect(f.map((x) => x.type)).toEqual([Frame.RelayHello, Frame.Error]);
        expect(JSON.parse(f[1]!.payload.toString()).code).toBe('relay-missing');
      }
      expect(createHash('sha256').update(readme).digest('hex')).toBe(files(path.join(cluster.nodes[0]!.home, 'sky_workdir')).get('README.md')!.sha);

      // The server lives only as long as the operation: after `end` it is gone.
      await s.conn.send(Frame.End, Buffer.alloc(0));
      const deadline = Date.now() + 5000;
      let refused = false;
      while (!refused && Date.now() < deadline) {
        refused = await new Promise<boolean>((resolve) => {
          const c = net.connect({ host: '127.0.0.1', port });
          c.on('connect', () => {
            c.destroy();
            resolve(false);
          });
          c.on('error', () => resolve(true));
        });
        if (!refused) await new Promise((r) => setTimeout(r, 100));
      }
      expect(refused).toBe(true);
    } finally {
      await s.close();
      await target.close().catch(() => {});
    }
  });
});
