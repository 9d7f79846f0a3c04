// Push and pull through real OpenSSH servers: the agent installs itself, later pushes reuse it, host keys are
// checked as the config says, a chatty login shell does not break the protocol, old agent versions are pruned,
// and a push killed midway converges on the next run.

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostBlock, sshSkipReason, startNodes, type SshCluster } from './helpers/sshd.js';
import { diffItems, walk, type Item } from './helpers/tree.js';

const skip = sshSkipReason();
if (skip) console.log(`SKIP ssh-push.test.ts: ${skip}`);
const BIN = path.resolve('packages/cli/dist/bin.js');

let work: string;
let cluster: SshCluster;
let chatty: SshCluster;

function skysync(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state'), SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: '0', ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Like skysync() but leaves this process's event loop running (for servers the test itself hosts). */
function skysyncAsync(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state'), SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: '0' },
    });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function files(dir: string): Map<string, Item> {
  return new Map([...walk(dir)].filter(([, it]) => it.type !== 'dir'));
}

function makeSource(dir: string): void {
  fs.mkdirSync(path.join(dir, 'src'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'src', 'train.py'), 'print("train")\n');
  fs.writeFileSync(path.join(dir, 'README.md'), '# project\n');
  fs.writeFileSync(path.join(dir, 'weights.bin'), Buffer.alloc(3 << 20, 5));
  fs.writeFileSync(path.join(dir, '.gitignore'), '*.log\n');
  fs.writeFileSync(path.join(dir, 'debug.log'), 'ignored\n');
  fs.symlinkSync('src/train.py', path.join(dir, 'link.py'));
}

function expectSynced(src: string, dest: string): void {
  const want = files(src);
  want.delete('debug.log');
  expect(diffItems(want, files(dest), { mtime: true })).toEqual([]);
}

describe.skipIf(skip !== null)('push and pull over SSH', () => {
  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-ssh-'));
    [cluster, chatty] = await Promise.all([startNodes(2), startNodes(1, { cluster: 'sky-chatty', loginBanner: 'Welcome! Last login: yesterday. Have a nice day.' })]);
  }, 120_000);
  afterAll(async () => {
    await cluster?.stop();
    await chatty?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('installs the agent, pushes, then reuses it for a no-op', () => {
    const src = path.join(work, 'src1');
    makeSource(src);
    const head = cluster.nodes[0]!;
    const first = skysync(['-F', cluster.sshConfig, 'push', 'sky-test', '--head-only', '-w', src, '--json']);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/installed the skysync agent on sky-test/);
    const stats = JSON.parse(first.stdout);
    expect(stats.transport).toBe('ssh');
    expectSynced(src, path.join(head.home, 'sky_workdir'));
    // Owned by the node's user, not root: the agent ran as that user.
    expect(fs.statSync(path.join(head.home, 'sky_workdir', 'README.md')).uid).toBe(fs.statSync(head.home).uid);

    const again = skysync(['-F', cluster.sshConfig, 'push', 'sky-test', '--head-only', '-w', src, '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).not.toMatch(/installed/);
    const s2 = JSON.parse(again.stdout);
    expect(s2.filesChanged).toBe(0);
    expect(s2.bytesWire).toBeLessThan(2048);

    fs.appendFileSync(path.join(src, 'src', 'train.py'), 'print("more")\n');
    fs.rmSync(path.join(src, 'README.md'));
    const third = skysync(['-F', cluster.sshConfig, 'push', 'sky-test', '--head-only', '-w', src, '--json']);
    expect(third.code, third.stderr).toBe(0);
    expect(JSON.parse(third.stdout).filesChanged).toBe(1);
    expectSynced(src, path.join(head.home, 'sky_workdir'));
  });

  // The destination's watch service outlives each agent (dest-watch.ts): commands that connect afresh check for
  // drift only where something changed on the node, and the client's SKYSYNC_WATCH_PERSIST=0 reaches the node.
  it('watches the destination between commands that connect afresh, unless watching is off', () => {
    const src = path.join(work, 'src-watched');
    makeSource(src);
    const node = cluster.nodes[1]!;
    const run = path.join(node.home, '.skysync', 'run');
    const sockets = (): string[] => (fs.existsSync(run) ? fs.readdirSync(run).filter((n) => n.startsWith('watch-')) : []);
    const push = (env: NodeJS.ProcessEnv = {}) => {
      const r = skysync(['-F', cluster.sshConfig, 'push', node.name, '-w', src, '--dest', '~/watched', '--json'], { SKYSYNC_TRACE: '1', ...env });
      expect(r.code, r.stderr).toBe(0);
      return { drift: (JSON.parse(r.stdout) as { drift: string[] }).drift, limited: /agent: drift check limited/.test(r.stderr) };
    };
    for (let i = 0; i < 3; i++) expect(push({ SKYSYNC_WATCH_PERSIST: '0' }).limited).toBe(false);
    expect(sockets()).toEqual([]);

    let limited = false;
    for (let i = 0; i < 6 && !limited; i++) limited = push().limited;
    expect(limited, 'a push whose drift check the watch service limited').toBe(true);
    expect(sockets()).toHaveLength(1);
    const onNode = path.join(node.home, 'watched', 'src', 'train.py');
    fs.writeFileSync(onNode, 'print("a job changed me")\n');
    const after = push();
    expect(after.limited).toBe(true);
    expect(after.drift).toEqual(['src/train.py']);
    expectSynced(src, path.join(node.home, 'watched'));
  });

  it('pulls a directory back from a worker', () => {
    const worker = cluster.nodes[1]!;
    const out = path.join(worker.home, 'sky_workdir', 'outputs');
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, 'metrics.json'), '{"loss":0.5}\n');
    fs.writeFileSync(path.join(out, 'ckpt.bin'), Buffer.alloc(2 << 20, 9));
    spawnSync('chown', ['-R', `${worker.user}:`, path.join(worker.home, 'sky_workdir')]);
    const local = path.join(work, 'pulled');
    const r = skysync(['-F', cluster.sshConfig, 'pull', 'sky-test-worker1:~/sky_workdir/outputs', local, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(diffItems(files(out), files(local), { mtime: true })).toEqual([]);
  });

  it('works through a login shell that prints a banner', () => {
    const src = path.join(work, 'src2');
    makeSource(src);
    const r = skysync(['-F', chatty.sshConfig, 'push', 'sky-chatty', '-w', src, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expectSynced(src, path.join(chatty.nodes[0]!.home, 'sky_workdir'));
  });

  it('refuses a changed host key with one line naming the file to fix', () => {
    const other = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(work, 'otherkey')]);
    expect(other.status).toBe(0);
    const pub = fs.readFileSync(path.join(work, 'otherkey.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
    const head = cluster.nodes[0]!;
    const known = path.join(work, 'bad_known_hosts');
    fs.writeFileSync(known, `[127.0.0.1]:${head.port} ${pub}\n`);
    const cfg = path.join(work, 'bad_config');
    fs.writeFileSync(cfg, fs.readFileSync(cluster.sshConfig, 'utf8').replaceAll(cluster.knownHosts, known));
    const r = skysync(['-F', cfg, 'push', 'sky-test', '--head-only', '-w', path.join(work, 'src1')]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/has changed/);
    expect(r.stderr).toContain(known);
  });

  it('upgrades past an old agent version and prunes it', () => {
    const head = cluster.nodes[0]!;
    const dir = path.join(head.home, '.skysync', 'agent');
    const old = path.join(dir, '0123456789abcdef.cjs');
    fs.writeFileSync(old, '// an old agent\n');
    const t = new Date(Date.now() - 3 * 86400_000);
    fs.utimesSync(old, t, t);
    // Make the current version look missing, so the next push installs it and prunes.
    for (const f of fs.readdirSync(dir)) if (f !== '0123456789abcdef.cjs') fs.rmSync(path.join(dir, f));
    const r = skysync(['-F', cluster.sshConfig, 'push', 'sky-test', '--head-only', '-w', path.join(work, 'src1')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/installed the skysync agent/);
    expect(fs.existsSync(old)).toBe(false);
  });

  it('spreads a large push or pull over several channels (directly and through a warm connection), and uses one where sshd allows no more', async () => {
    const src = path.join(work, 'lanes');
    fs.mkdirSync(src, { recursive: true });
    // Incompressible, and well past the point where the client opens lanes.
    fs.writeFileSync(path.join(src, 'a.bin'), crypto.randomBytes(24 << 20));
    fs.writeFileSync(path.join(src, 'note.txt'), 'checkpoint\n');
    const head = cluster.nodes[0]!;
    const dest = path.join(head.home, 'sky_workdir_lanes');
    const push = (env: NodeJS.ProcessEnv = {}, c = cluster) =>
      skysync(['-F', c.sshConfig, 'push', c === cluster ? 'sky-test' : 'sky-nolanes', '--head-only', '-w', src, '--dest', '~/sky_workdir_lanes', '--json'], env);

    const r = push();
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.lanes).toBe(8);
    expect(s.bytesWire).toBeGreaterThan(24 << 20);
    expectSynced(src, dest);
    // The lane socket is private to the node's user.
    const run = path.join(head.home, '.skysync', 'run');
    expect(fs.statSync(run).mode & 0o777).toBe(0o700);

    // Through a warm connection: the lanes are opened by the background process.
    fs.writeFileSync(path.join(src, 'a.bin'), crypto.randomBytes(20 << 20));
    const warm = { SKYSYNC_CONTROL_PERSIST: '60', SKYSYNC_LANES: '3' };
    expect(push(warm).code).toBe(0);
    fs.writeFileSync(path.join(src, 'b.bin'), crypto.randomBytes(20 << 20));
    const w = push(warm);
    expect(w.code, w.stderr).toBe(0);
    expect(JSON.parse(w.stdout).lanes).toBe(3);
    expectSynced(src, dest);
    expect(skysync(['-F', cluster.sshConfig, 'disconnect', 'sky-test'], warm).code).toBe(0);

    // A pull of as much comes back over several channels too (the client opens them, the agent sends on them).
    const back = path.join(work, 'lanes-back');
    const pulled = skysync(['-F', cluster.sshConfig, 'pull', 'sky-test:~/sky_workdir_lanes', back, '--json'], { SKYSYNC_LANES: '4' });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(JSON.parse(pulled.stdout).lanes).toBe(4);
    expect(diffItems(files(dest), files(back), { mtime: true })).toEqual([]);

    // Turned off: one channel.
    fs.writeFileSync(path.join(src, 'b.bin'), crypto.randomBytes(12 << 20));
    const one = push({ SKYSYNC_LANES: '1' });
    expect(one.code, one.stderr).toBe(0);
    expect(JSON.parse(one.stdout).lanes).toBe(1);
    expectSynced(src, dest);

    // An sshd that refuses Unix-socket forwarding: one line saying so, and the push completes over one channel.
    const strict = await startNodes(1, { cluster: 'sky-nolanes', sshdConfig: ['AllowStreamLocalForwarding no'] });
    try {
      const n = push({}, strict);
      expect(n.code, n.stderr).toBe(0);
      expect(JSON.parse(n.stdout).lanes).toBe(1);
      expect(n.stderr).toMatch(/could not open extra channels \(.+\); the data went over one/);
      expectSynced(src, path.join(strict.nodes[0]!.home, 'sky_workdir_lanes'));
    } finally {
      await strict.stop();
    }
  }, 180_000);

  it('converges after a push is killed midway', async () => {
    const src = path.join(work, 'src3');
    makeSource(src);
    fs.writeFileSync(path.join(src, 'big.bin'), Buffer.alloc(64 << 20, 1).fill(7, 1 << 20));
    const worker = cluster.nodes[1]!;
    const child = spawn(process.execPath, [BIN, '-F', cluster.sshConfig, 'push', 'sky-test-worker1', '-w', src, '--dest', '~/killed'], {
      env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state'), SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: '0' },
      stdio: 'ignore',
    });
    // Kill it while a file is being staged on the remote (or after 5 s at most).
    const dest = path.join(worker.home, 'killed');
    for (let i = 0; i < 250; i++) {
      let staging = false;
      try {
        staging = fs.existsSync(dest) && [...walk(dest).keys()].some((p) => p.includes('.skysync-'));
      } catch {
        // A temp file vanished while we looked: staging is under way.
        staging = true;
      }
      if (staging) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    // The agent sees the connection end and removes its temp files by itself.
    const temps = (): string[] => {
      try {
        return fs.existsSync(dest) ? [...walk(dest).keys()].filter((p) => p.includes('.skysync-')) : [];
      } catch {
        return ['(changing)'];
      }
    };
    for (let i = 0; i < 100 && temps().length; i++) await new Promise((r) => setTimeout(r, 50));
    expect(temps()).toEqual([]);
    const r = skysync(['-F', cluster.sshConfig, 'push', 'sky-test-worker1', '-w', src, '--dest', '~/killed']);
    expect(r.code, r.stderr).toBe(0);
    expectSynced(src, path.join(worker.home, 'killed'));
    // Nothing half-written is left behind.
    const leftovers = [...walk(path.join(worker.home, 'killed')).keys()].filter((p) => p.includes('.skysync-'));
    expect(leftovers).toEqual([]);
  });

  it('reaches hosts through an Included config, ProxyJump and ProxyCommand, as OpenSSH does', () => {
    const [head, worker] = cluster.nodes as [(typeof cluster.nodes)[0], (typeof cluster.nodes)[0]];
    // SkyPilot's shape: the main config includes generated files; host keys are not checked for them.
    const gen = path.join(work, 'generated');
    fs.mkdirSync(gen, { recursive: true });
    fs.writeFileSync(path.join(gen, 'mycluster'), hostBlock('mycluster', worker, cluster.clientKey));
    const jumpBlock = (name: string, how: string[]) => hostBlock(name, worker, cluster.clientKey, { strict: 'yes', knownHosts: cluster.knownHosts, extra: how });
    const cfg = path.join(work, 'main_config');
    fs.writeFileSync(
      cfg,
      [
        `Include ${gen}/*`,
        jumpBlock('via-jump', ['ProxyJump sky-test']),
        jumpBlock('via-command', [`ProxyCommand ssh -F ${cfg} -W %h:%p sky-test`]),
        fs.readFileSync(cluster.sshConfig, 'utf8'),
      ].join('\n'),
    );
    const src = path.join(work, 'src4');
    makeSource(src);
    const headLogins = (): number => (cluster.logs()[0]!.match(/Accepted publickey/g) ?? []).length;
    for (const [alias, dest, throughHead] of [
      ['mycluster', 'inc', false],
      ['via-jump', 'jump', true],
      ['via-command', 'cmd', true],
    ] as const) {
      const before = headLogins();
      const r = skysync(['-F', cfg, 'push', alias, '-w', src, '--dest', `~/${dest}`]);
      expect(r.code, `${alias}: ${r.stderr}`).toBe(0);
      expectSynced(src, path.join(worker.home, dest));
      // The jump really went through the head: its sshd saw a login for it.
      if (throughHead) expect(headLogins(), alias).toBeGreaterThan(before);
      else expect(headLogins(), alias).toBe(before);
    }
    expect(head.port).not.toBe(worker.port);
  });

  it('falls back to rsync (with git ignore rules) where node is missing, and names what is missing', async () => {
    const bare = await startNodes(2, { cluster: 'sky-bare', noNode: true, noRsync: [1] });
    try {
      const src = path.join(work, 'src5');
      makeSource(src);
      fs.mkdirSync(path.join(src, 'sub', 'data'), { recursive: true });
      fs.writeFileSync(path.join(src, 'sub', '.gitignore'), 'data/*\n!data/keep.txt\n');
      fs.writeFileSync(path.join(src, 'sub', 'data', 'big.npy'), 'ignored by git rules\n');
      fs.writeFileSync(path.join(src, 'sub', 'data', 'keep.txt'), 'kept by negation\n');
      fs.writeFileSync(path.join(src, "it's a 'quoted' name.txt"), 'quotes\n');
      const r = skysync(['-F', bare.sshConfig, '--no-install-node', 'push', 'sky-bare', '--head-only', '-w', src, '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/using rsync over ssh: sky-bare has no node/);
      expect(r.stderr.match(/using rsync/g)).toHaveLength(1);
      expect(JSON.parse(r.stdout).transport).toBe('rsync');
      const dest = path.join(bare.nodes[0]!.home, 'sky_workdir');
      const want = files(src);
      want.delete('debug.log');
      want.delete('sub/data/big.npy');
      expect(diffItems(want, files(dest), { mtime: true })).toEqual([]);

      const none = skysync(['-F', bare.sshConfig, '--no-install-node', 'push', 'sky-bare-worker1', '-w', src]);
      expect(none.code).toBe(1);
      expect(none.stderr).toMatch(/neither node >= 18 .* nor rsync/);
    } finally {
      await bare.stop();
    }
  });

  it('uses rsync when asked, even where the agent could run', () => {
    const src = path.join(work, 'src6');
    makeSource(src);
    const r = skysync(['-F', cluster.sshConfig, 'push', 'sky-test', '--head-only', '-w', src, '--dest', '~/by-rsync', '--transport', 'rsync']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/using rsync over ssh: --transport rsync/);
    const want = files(src);
    want.delete('debug.log');
    expect(diffItems(want, files(path.join(cluster.nodes[0]!.home, 'by-rsync')), { mtime: true })).toEqual([]);
  });
  it('lets two clients install the agent at the same time', async () => {
    const fresh = await startNodes(1, { cluster: 'sky-race' });
    try {
      const src = path.join(work, 'src7');
      makeSource(src);
      const run = (dest: string) =>
        new Promise<{ code: number | null; stderr: string }>((resolve) => {
          const c = spawn(process.execPath, [BIN, '-F', fresh.sshConfig, 'push', 'sky-race', '-w', src, '--dest', dest], {
            env: { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state-race'), SSH_AUTH_SOCK: '', SKYSYNC_CONTROL_PERSIST: '0' },
          });
          let stderr = '';
          c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
          c.on('close', (code) => resolve({ code, stderr }));
        });
      const [a, b] = await Promise.all([run('~/a'), run('~/b')]);
      expect(a.code, a.stderr).toBe(0);
      expect(b.code, b.stderr).toBe(0);
      expectSynced(src, path.join(fresh.nodes[0]!.home, 'a'));
      expectSynced(src, path.join(fresh.nodes[0]!.home, 'b'));
      const agents = fs.readdirSync(path.join(fresh.nodes[0]!.home, '.skysync', 'agent'));
      expect(agents.filter((f) => f.endsWith('.tmp'))).toEqual([]);
      expect(agents.filter((f) => f.endsWith('.cjs'))).toHaveLength(1);
    } finally {
      await fresh.stop();
    }
  });
  it('provisions Node on a remote without it: downloaded from the configured URL, or uploaded', async () => {
    const bare = await startNodes(2, { cluster: 'sky-nonode', noNode: true });
    // A local HTTP server stands in for the official download site: a tarball laid out like Node's.
    const dist = path.join(work, 'dist');
    const top = `node-${process.version}-linux-x64`;
    fs.mkdirSync(path.join(dist, top, 'bin'), { recursive: true });
    fs.copyFileSync(process.execPath, path.join(dist, top, 'bin', 'node'));
    const tgz = path.join(work, 'node.tar.gz');
    expect(spawnSync('tar', ['-czf', tgz, '-C', dist, top]).status).toBe(0);
    const http = await import('node:http');
    let served = 0;
    const server = http.createServer((req, res) => {
      if (req.url === `/dist/${process.version}/node-${process.version}-linux-x64.tar.gz`) {
        served++;
        res.writeHead(200, { 'content-type': 'application/gzip' });
        fs.createReadStream(tgz).pipe(res);
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const src = path.join(work, 'src8');
      makeSource(src);
      const url = `http://127.0.0.1:${port}/dist/{version}/node-{version}-{os}-{arch}.tar.gz`;
      const r = await skysyncAsync(['-F', bare.sshConfig, '--node-url', url, 'push', 'sky-nonode', '--head-only', '-w', src, '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/had no node: downloaded Node v\d+/);
      expect(served).toBe(1);
      expect(JSON.parse(r.stdout).transport).toBe('ssh');
      expectSynced(src, path.join(bare.nodes[0]!.home, 'sky_workdir'));
      // A URL that does not answer: the platforms match, so the local binary is uploaded instead.
      const up = await skysyncAsync(['-F', bare.sshConfig, '--node-url', `http://127.0.0.1:${port}/missing`, 'push', 'sky-nonode-worker1', '-w', src]);
      expect(up.code, up.stderr).toBe(0);
      expect(up.stderr).toMatch(/uploaded this machine's Node/);
      expectSynced(src, path.join(bare.nodes[1]!.home, 'sky_workdir'));
    } finally {
      server.close();
      await bare.stop();
    }
  }, 180_000);
});
