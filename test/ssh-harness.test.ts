// The sshd harness itself, checked with the real OpenSSH client: right user and home per node, a chatty login
// banner when asked, `node`/`rsync` missing when asked, host keys as the generated known_hosts says, and nothing
// left behind by stop().

import fs from 'node:fs';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sshSkipReason, startNodes, type SshCluster } from './helpers/sshd.js';

const skip = sshSkipReason();
if (skip) console.log(`SKIP ssh-harness.test.ts: ${skip}`);

function ssh(cfg: string, alias: string, cmd: string, extra: string[] = []) {
  const r = spawnSync('ssh', ['-F', cfg, ...extra, alias, cmd], { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe.skipIf(skip !== null)('sshd harness', () => {
  let plain: SshCluster;
  let chatty: SshCluster;

  beforeAll(async () => {
    // Two clusters at once: they must get different users, ports and host keys.
    [plain, chatty] = await Promise.all([startNodes(3), startNodes(2, { cluster: 'sky-chatty', loginBanner: "Welcome to 'chatty' node!", noNode: true, noRsync: [1] })]);
  });
  afterAll(async () => {
    await plain?.stop();
    await chatty?.stop();
  });

  it('gives every node its own user, home and port, named like SkyPilot names nodes', () => {
    expect(plain.nodes.map((n) => n.name)).toEqual(['sky-test', 'sky-test-worker1', 'sky-test-worker2']);
    expect(chatty.nodes.map((n) => n.name)).toEqual(['sky-chatty', 'sky-chatty-worker1']);
    const all = [...plain.nodes, ...chatty.nodes];
    expect(new Set(all.map((n) => n.user)).size).toBe(all.length);
    expect(new Set(all.map((n) => n.home)).size).toBe(all.length);
    expect(new Set(all.map((n) => n.port)).size).toBe(all.length);
    expect(new Set(all.map((n) => n.hostKeyPub)).size).toBe(all.length);
    for (const node of plain.nodes) {
      const r = ssh(plain.sshConfig, node.name, 'echo $HOME; whoami');
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`${node.home}\n${node.user}\n`);
    }
  });

  it('keeps homes separate: a file written on one node is not on another', () => {
    const [head, w1] = plain.nodes;
    expect(ssh(plain.sshConfig, head!.name, 'echo head > ~/marker').code).toBe(0);
    expect(fs.readFileSync(`${head!.home}/marker`, 'utf8')).toBe('head\n');
    expect(ssh(plain.sshConfig, w1!.name, 'test -e ~/marker').code).toBe(1);
  });

  it('prints the login banner before the command output when asked, and not otherwise', () => {
    const r = ssh(chatty.sshConfig, 'sky-chatty-worker1', 'echo OUTPUT');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe("Welcome to 'chatty' node!\nOUTPUT\n");
    // Login shells print it too (from ~/.profile), once.
    const login = ssh(chatty.sshConfig, 'sky-chatty', 'exec bash -lc "echo OUTPUT"');
    expect(login.stdout.split('\n').filter((l) => l.includes('Welcome')).length).toBeGreaterThanOrEqual(1);
    expect(login.stdout.trimEnd().endsWith('OUTPUT')).toBe(true);
    expect(ssh(plain.sshConfig, 'sky-test', 'echo OUTPUT').stdout).toBe('OUTPUT\n');
  });

  it('hides node (and rsync) when asked, from login and non-login shells alike', () => {
    const probe = 'command -v node || echo NO-NODE; command -v rsync || echo NO-RSYNC';
    expect(ssh(plain.sshConfig, 'sky-test', probe).stdout).toMatch(/\/node\n\/.*rsync\n$/);
    expect(ssh(plain.sshConfig, 'sky-test', 'node -e "console.log(1+1)"').stdout).toBe('2\n');

    const head = ssh(chatty.sshConfig, 'sky-chatty', probe).stdout;
    expect(head).toContain('NO-NODE');
    expect(head).not.toContain('NO-RSYNC');
    const worker = ssh(chatty.sshConfig, 'sky-chatty-worker1', probe).stdout;
    expect(worker).toContain('NO-NODE');
    expect(worker).toContain('NO-RSYNC');
    // A login shell resets PATH (/etc/profile) and still finds nothing; running it is "command not found".
    expect(ssh(chatty.sshConfig, 'sky-chatty', `bash -lc 'command -v node || echo NO-NODE'`).stdout).toContain('NO-NODE');
    expect(ssh(chatty.sshConfig, 'sky-chatty', 'node -v').code).toBe(127);
    expect(ssh(chatty.sshConfig, 'sky-chatty', 'PATH=/usr/bin:/bin:/usr/local/bin node -v').code).toBe(127);
    // The host itself is untouched.
    expect(fs.existsSync('/usr/bin/node') || fs.existsSync('/usr/local/bin/node')).toBe(true);
  });

  it('serves sftp through internal-sftp', () => {
    const r = spawnSync('sftp', ['-F', plain.sshConfig, '-b', '-', 'sky-test-worker2'], {
      input: 'pwd\n',
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(plain.nodes[2]!.home);
  });

  it('has host keys that match the generated known_hosts (ssh-keyscan, and strict checking)', () => {
    for (const node of [...plain.nodes, ...chatty.nodes]) {
      const scan = spawnSync('ssh-keyscan', ['-p', String(node.port), '-t', 'ed25519', '127.0.0.1'], { encoding: 'utf8', timeout: 20_000 });
      const line = scan.stdout.split('\n').find((l) => l && !l.startsWith('#'));
      expect(line).toBe(`[127.0.0.1]:${node.port} ${node.hostKeyPub}`);
      expect(fs.readFileSync(`${node.hostKeyFile}.pub`, 'utf8').startsWith(node.hostKeyPub)).toBe(true);
    }
    const known = fs.readFileSync(plain.knownHosts, 'utf8');
    for (const node of plain.nodes) expect(known).toContain(`[127.0.0.1]:${node.port} ${node.hostKeyPub}\n`);
    // The generated config checks strictly: with an empty known_hosts the same login is refused.
    const empty = `${plain.dir}/empty_known_hosts`;
    fs.writeFileSync(empty, '');
    const r = ssh(plain.sshConfig, 'sky-test', 'true', ['-o', `UserKnownHostsFile=${empty}`]);
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/Host key verification failed/);
  });

  it('stop() ends every sshd and session and wipes the homes', async () => {
    const extra = await startNodes(1, { cluster: 'sky-stop' });
    const node = extra.nodes[0]!;
    // A process that outlives its session, and a file in the home.
    expect(ssh(extra.sshConfig, 'sky-stop', 'touch ~/leftover; nohup sleep 300 >/dev/null 2>&1 & echo started').stdout).toBe('started\n');
    expect(fs.existsSync(`${node.home}/leftover`)).toBe(true);
    const uid = fs.statSync(node.home).uid;
    await extra.stop();
    expect(await portOpen(node.port)).toBe(false);
    expect(fs.existsSync(`${node.home}/leftover`)).toBe(false);
    expect(fs.existsSync(extra.dir)).toBe(false);
    const left = fs
      .readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return fs.statSync(`/proc/${p}`).uid === uid;
        } catch {
          return false;
        }
      });
    expect(left).toEqual([]);
  });
});
