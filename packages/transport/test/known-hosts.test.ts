// known_hosts checking and writing, against keys made by ssh-keygen, files hashed by `ssh-keygen -H`, lines
// from `ssh-keyscan` against a real sshd, and the real ssh client's verdicts on the same files.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  appendKnownHost,
  checkHostKey,
  fingerprint,
  hashHostName,
  hostKeyPolicy,
  keyTypeOf,
  knownHostsName,
  mismatchMessage,
  revokedMessage,
  unknownMessage,
} from '../src/known-hosts.js';
import type { ResolvedHost } from '../src/ssh-config/index.js';
import { sshSkipReason, startNodes, type SshCluster } from '../../../test/helpers/sshd.js';

interface Key {
  type: string;
  blob: Buffer;
  /** `type base64` as in a known_hosts line. */
  text: string;
}

let dir: string;
const keys: Record<'ed' | 'rsa' | 'ecdsa' | 'ed2', Key> = {} as never;

function keygen(name: string, type: string): Key {
  const f = path.join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', type, ...(type === 'rsa' ? ['-b', '2048'] : []), '-N', '', '-C', 'c', '-f', f]);
  const [t, b64] = fs.readFileSync(`${f}.pub`, 'utf8').trim().split(/\s+/) as [string, string];
  return { type: t, blob: Buffer.from(b64, 'base64'), text: `${t} ${b64}` };
}

function file(name: string, lines: string[]): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, lines.map((l) => `${l}\n`).join(''));
  return p;
}

function check(host: string, port: number, k: Key, files: string[]) {
  return checkHostKey({ host, port, keyType: k.type, key: k.blob, files });
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-kh-'));
  keys.ed = keygen('k_ed', 'ed25519');
  keys.rsa = keygen('k_rsa', 'rsa');
  keys.ecdsa = keygen('k_ecdsa', 'ecdsa');
  keys.ed2 = keygen('k_ed2', 'ed25519');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('checkHostKey', () => {
  let f: string;
  beforeAll(() => {
    f = file('plain', [
      '# a comment',
      '',
      `example.com,10.0.0.1 ${keys.ed.text} user@laptop`,
      `[127.0.0.1]:2222 ${keys.rsa.text}`,
      `*.wild.example,!bad.wild.example ${keys.ecdsa.text}`,
      `db? ${keys.ed.text}`,
      `@cert-authority *.ca.example ${keys.ed.text}`,
      'this line is garbage',
      `@bogus-marker example.com ${keys.rsa.text}`,
      `   indented.example ${keys.ed.text}`,
      `mixed.example ssh-rsa ${keys.ed.text.split(' ')[1]}`, // type field disagrees with the key: ignored
    ]);
  });

  it('knows the wire-format type and fingerprint of a key', () => {
    expect(keyTypeOf(keys.ed.blob)).toBe('ssh-ed25519');
    expect(keyTypeOf(keys.rsa.blob)).toBe('ssh-rsa');
    expect(keyTypeOf(keys.ecdsa.blob)).toBe('ecdsa-sha2-nistp256');
    const lf = execFileSync('ssh-keygen', ['-l', '-f', path.join(dir, 'k_ed.pub')], { encoding: 'utf8' });
    expect(lf).toContain(fingerprint(keys.ed.blob));
  });

  it('matches plain, comma-separated, port and wildcard patterns, case-insensitively', () => {
    expect(check('example.com', 22, keys.ed, [f])).toEqual({ status: 'match', file: f, line: 3 });
    expect(check('10.0.0.1', 22, keys.ed, [f])).toMatchObject({ status: 'match', line: 3 });
    expect(check('EXAMPLE.com', 22, keys.ed, [f])).toMatchObject({ status: 'match', line: 3 });
    expect(check('example.com', 2222, keys.ed, [f])).toEqual({ status: 'unknown' }); // needs [example.com]:2222
    expect(check('127.0.0.1', 2222, keys.rsa, [f])).toMatchObject({ status: 'match', line: 4 });
    expect(check('127.0.0.1', 22, keys.rsa, [f])).toEqual({ status: 'unknown' });
    expect(check('a.wild.example', 22, keys.ecdsa, [f])).toMatchObject({ status: 'match', line: 5 });
    expect(check('bad.wild.example', 22, keys.ecdsa, [f])).toEqual({ status: 'unknown' }); // negated
    expect(check('db1', 22, keys.ed, [f])).toMatchObject({ status: 'match', line: 6 });
    expect(check('db12', 22, keys.ed, [f])).toEqual({ status: 'unknown' });
    expect(check('indented.example', 22, keys.ed, [f])).toMatchObject({ status: 'match', line: 10 });
    expect(check('mixed.example', 22, keys.rsa, [f])).toEqual({ status: 'unknown' });
  });

  it('calls any other key for the host a mismatch, of whatever type (as ssh 9.2 does)', () => {
    expect(check('example.com', 22, keys.ed2, [f])).toEqual({ status: 'mismatch', file: f, line: 3, knownKeyType: 'ssh-ed25519' });
    expect(check('example.com', 22, keys.rsa, [f])).toMatchObject({ status: 'mismatch', line: 3, knownKeyType: 'ssh-ed25519' });
    expect(check('127.0.0.1', 2222, keys.ed, [f])).toMatchObject({ status: 'mismatch', line: 4, knownKeyType: 'ssh-rsa' });
  });

  it('does not take a @cert-authority line as a match or a mismatch for a plain key', () => {
    expect(check('x.ca.example', 22, keys.ed, [f])).toEqual({ status: 'unknown' });
    expect(check('x.ca.example', 22, keys.rsa, [f])).toEqual({ status: 'unknown' });
  });

  it('lets @revoked win over a match, in any file', () => {
    const rev = file('revoked', ['# revoked', `@revoked * ${keys.ed.text}`]);
    expect(check('example.com', 22, keys.ed, [f, rev])).toEqual({ status: 'revoked', file: rev, line: 2 });
    expect(check('example.com', 22, keys.ed2, [f, rev])).toMatchObject({ status: 'mismatch' });
    const narrow = file('revoked-narrow', [`@revoked other.example ${keys.ed.text}`]);
    expect(check('example.com', 22, keys.ed, [f, narrow])).toMatchObject({ status: 'match' });
  });

  it('names the last contradicting entry, across files', () => {
    const a = file('m1', [`[m.example]:2200 ${keys.rsa.text}`, `[m.example]:2200 ${keys.ecdsa.text}`]);
    const b = file('m2', [`[m.example]:2200 ${keys.ed2.text}`, `other.example ${keys.rsa.text}`]);
    expect(check('m.example', 2200, keys.ed, [a])).toMatchObject({ status: 'mismatch', file: a, line: 2 });
    expect(check('m.example', 2200, keys.ed, [a, b])).toMatchObject({ status: 'mismatch', file: b, line: 1 });
  });

  it('reads several files: a match anywhere beats a mismatch; missing files are skipped', () => {
    const a = file('a', [`[h.example]:2200 ${keys.ed2.text}`]);
    const b = file('b', [`[h.example]:2200 ${keys.ed.text}`]);
    const missing = path.join(dir, 'nope', 'known_hosts');
    expect(check('h.example', 2200, keys.ed, [missing, a, b])).toEqual({ status: 'match', file: b, line: 1 });
    expect(check('h.example', 2200, keys.ed, [missing, a])).toMatchObject({ status: 'mismatch', file: a, line: 1 });
    expect(check('h.example', 2200, keys.ed, [missing, dir, '/dev/null'])).toEqual({ status: 'unknown' });
    expect(check('h.example', 2200, keys.ed, [])).toEqual({ status: 'unknown' });
  });

  it('matches entries hashed by ssh-keygen -H, and ssh-keygen -F finds names hashed by hashHostName', () => {
    const h = file('hashed', [`example.com ${keys.ed.text}`, `[127.0.0.1]:2222 ${keys.rsa.text}`, `other.example ${keys.ecdsa.text}`]);
    execFileSync('ssh-keygen', ['-q', '-H', '-f', h], { stdio: ['ignore', 'pipe', 'pipe'] });
    const text = fs.readFileSync(h, 'utf8');
    expect(text).not.toContain('example.com');
    expect(
      text
        .split('\n')
        .filter(Boolean)
        .every((l) => l.startsWith('|1|')),
    ).toBe(true);
    expect(check('example.com', 22, keys.ed, [h])).toMatchObject({ status: 'match', line: 1 });
    expect(check('Example.COM', 22, keys.ed, [h])).toMatchObject({ status: 'match', line: 1 });
    expect(check('127.0.0.1', 2222, keys.rsa, [h])).toMatchObject({ status: 'match', line: 2 });
    expect(check('127.0.0.1', 2222, keys.ed, [h])).toMatchObject({ status: 'mismatch', line: 2 });
    expect(check('127.0.0.1', 22, keys.rsa, [h])).toEqual({ status: 'unknown' });

    const mine = file('mine', [`${hashHostName('[10.1.2.3]:2201')} ${keys.ed.text}`, `${hashHostName('plain.example')} ${keys.rsa.text}`]);
    const found = spawnSync('ssh-keygen', ['-F', '[10.1.2.3]:2201', '-f', mine], { encoding: 'utf8' });
    expect(found.stdout).toContain('found: line 1');
    expect(spawnSync('ssh-keygen', ['-F', 'plain.example', '-f', mine], { encoding: 'utf8' }).stdout).toContain('found: line 2');
    expect(spawnSync('ssh-keygen', ['-F', '10.1.2.3', '-f', mine], { encoding: 'utf8' }).status).toBe(1);
  });

  it('agrees with ssh-keygen -F about which lines name a host', () => {
    const names = ['example.com', '10.0.0.1', '[127.0.0.1]:2222', 'a.wild.example', 'bad.wild.example', 'db1', 'db12', 'nothing.example'];
    const plain = file('xcheck', [
      `example.com,10.0.0.1 ${keys.ed.text}`,
      `[127.0.0.1]:2222 ${keys.rsa.text}`,
      `*.wild.example,!bad.wild.example ${keys.ecdsa.text}`,
      `db? ${keys.ed.text}`,
      `*.example ${keys.ed2.text}`,
    ]);
    for (const name of names) {
      const out = spawnSync('ssh-keygen', ['-F', name, '-f', plain], { encoding: 'utf8' }).stdout;
      const lines = [...out.matchAll(/found: line (\d+)/g)].map((m) => Number(m[1]));
      const m = /^\[(.*)\]:(\d+)$/.exec(name);
      const [host, port] = m ? [m[1]!, Number(m[2])] : [name, 22];
      for (const k of Object.values(keys)) {
        const r = check(host, port, k, [plain]);
        const fileLines = fs.readFileSync(plain, 'utf8').split('\n');
        const withKey = lines.filter((n) => fileLines[n - 1]!.includes(k.text));
        if (withKey.length) expect(r, `${name} ${k.type}`).toMatchObject({ status: 'match', line: withKey[0] });
        else if (lines.length) expect(r, `${name} ${k.type}`).toMatchObject({ status: 'mismatch', line: lines[lines.length - 1] });
        else expect(r, `${name} ${k.type}`).toEqual({ status: 'unknown' });
      }
    }
  });
});

describe('appendKnownHost', () => {
  it('creates the directory 0700 and the file 0600, plain or hashed, and is idempotent', async () => {
    const f = path.join(dir, 'new', 'deeper', 'known_hosts');
    await appendKnownHost(f, '127.0.0.1', 2201, 'ssh-ed25519', keys.ed.blob);
    expect(fs.statSync(path.dirname(f)).mode & 0o777).toBe(0o700);
    expect(fs.statSync(f).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(f, 'utf8')).toBe(`[127.0.0.1]:2201 ${keys.ed.text}\n`);
    await appendKnownHost(f, '127.0.0.1', 2201, 'ssh-ed25519', keys.ed.blob);
    expect(fs.readFileSync(f, 'utf8').split('\n').filter(Boolean)).toHaveLength(1);
    await appendKnownHost(f, 'Host.Example', 22, 'rsa-sha2-512', keys.rsa.blob, { hash: true });
    const lines = fs.readFileSync(f, 'utf8').split('\n').filter(Boolean);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/^\|1\|[A-Za-z0-9+/=]+\|[A-Za-z0-9+/=]+ ssh-rsa /); // the key's own type, not the signature algorithm
    expect(check('host.example', 22, keys.rsa, [f])).toMatchObject({ status: 'match', line: 2 });
    expect(spawnSync('ssh-keygen', ['-F', 'host.example', '-f', f], { encoding: 'utf8' }).stdout).toContain('found: line 2');
    expect(fs.readdirSync(path.dirname(f))).toEqual(['known_hosts']); // no temp or lock files left
  });

  it('loses nothing when many adders race', async () => {
    const f = path.join(dir, 'race', 'known_hosts');
    await Promise.all(Array.from({ length: 30 }, (_, i) => appendKnownHost(f, '10.0.0.9', 3000 + i, 'ssh-ed25519', keys.ed.blob, { hash: i % 2 === 0 })));
    const lines = fs.readFileSync(f, 'utf8').split('\n').filter(Boolean);
    expect(lines).toHaveLength(30);
    for (let i = 0; i < 30; i++) expect(check('10.0.0.9', 3000 + i, keys.ed, [f]).status).toBe('match');
  });

  it('updates a symlinked file at its target, keeps an existing mode, and ignores /dev/null', async () => {
    const real = file('real_known_hosts', [`existing.example ${keys.ed.text}`]);
    fs.chmodSync(real, 0o644);
    const link = path.join(dir, 'link_known_hosts');
    fs.symlinkSync(real, link);
    await appendKnownHost(link, 'new.example', 22, 'ssh-ed25519', keys.ed2.blob);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(real, 'utf8')).toBe(`existing.example ${keys.ed.text}\nnew.example ${keys.ed2.text}\n`);
    expect(fs.statSync(real).mode & 0o777).toBe(0o644);
    const before = fs.statSync('/dev/null');
    await appendKnownHost('/dev/null', 'x', 22, 'ssh-ed25519', keys.ed.blob);
    expect(fs.statSync('/dev/null').isCharacterDevice()).toBe(before.isCharacterDevice());
  });

  it('appends after a last line without a newline', async () => {
    const f = path.join(dir, 'nonl');
    fs.writeFileSync(f, `a.example ${keys.ed.text}`);
    await appendKnownHost(f, 'b.example', 22, 'ssh-ed25519', keys.ed.blob);
    expect(fs.readFileSync(f, 'utf8')).toBe(`a.example ${keys.ed.text}\nb.example ${keys.ed.text}\n`);
  });
});

describe('hostKeyPolicy', () => {
  const base = {
    hostname: '10.0.0.1',
    port: 2201,
    userKnownHostsFiles: ['/home/u/.ssh/known_hosts', '/home/u/.ssh/known_hosts2'],
    globalKnownHostsFiles: ['/etc/ssh/ssh_known_hosts'],
    hostKeyAlias: null,
    hashKnownHosts: true,
  } satisfies Partial<ResolvedHost>;

  it.each([
    ['yes', 'refuse', 'refuse'],
    ['ask', 'refuse', 'refuse'],
    ['accept-new', 'add', 'refuse'],
    ['no', 'add', 'warn'],
    ['off', 'add', 'warn'],
  ] as const)('StrictHostKeyChecking %s: unknown → %s, mismatch → %s', (strict, unknown, mismatch) => {
    const p = hostKeyPolicy({ ...base, strictHostKeyChecking: strict });
    expect([p.decide('match'), p.decide('unknown'), p.decide('mismatch'), p.decide('revoked')]).toEqual(['accept', unknown, mismatch, 'refuse']);
    expect([p.match, p.unknown, p.mismatch, p.revoked]).toEqual(['accept', unknown, mismatch, 'refuse']);
    expect(p.addTo).toBe('/home/u/.ssh/known_hosts');
    expect(p.files).toEqual([...base.userKnownHostsFiles, ...base.globalKnownHostsFiles]);
    expect(p.hash).toBe(true);
    expect(p.lookup).toEqual({ host: '10.0.0.1', port: 2201 });
  });

  it('accepts without adding when the user file is /dev/null (SkyPilot: no + /dev/null)', () => {
    const p = hostKeyPolicy({ ...base, strictHostKeyChecking: 'no', userKnownHostsFiles: ['/dev/null'], globalKnownHostsFiles: ['/dev/null'] });
    expect([p.unknown, p.mismatch, p.addTo]).toEqual(['accept', 'warn', null]);
    expect(hostKeyPolicy({ ...base, strictHostKeyChecking: 'accept-new', userKnownHostsFiles: ['/dev/null'] }).unknown).toBe('accept');
    expect(hostKeyPolicy({ ...base, strictHostKeyChecking: 'yes', userKnownHostsFiles: ['/dev/null'] }).unknown).toBe('refuse');
  });

  it('looks up HostKeyAlias without a port, as ssh does', () => {
    expect(hostKeyPolicy({ ...base, strictHostKeyChecking: 'yes', hostKeyAlias: 'my-alias' }).lookup).toEqual({ host: 'my-alias', port: 22 });
  });
});

describe('messages', () => {
  it('says in one line what changed, what it can mean, and how to fix the file', () => {
    const m = mismatchMessage({ host: '127.0.0.1', port: 2222, keyType: 'ssh-ed25519', key: keys.ed.blob, file: '/home/u/.ssh/known_hosts', line: 7 });
    expect(m).not.toContain('\n');
    expect(m).toContain('Host key for [127.0.0.1]:2222 has changed');
    expect(m).toContain(fingerprint(keys.ed.blob));
    expect(m).toContain('ED25519');
    expect(m).toContain('/home/u/.ssh/known_hosts:7');
    expect(m).toMatch(/man-in-the-middle/);
    expect(m).toContain("ssh-keygen -R '[127.0.0.1]:2222' -f /home/u/.ssh/known_hosts");
    expect(mismatchMessage({ host: 'h.example', port: 22, keyType: 'ssh-rsa' })).toContain('ssh-keygen -R h.example`');
    expect(revokedMessage({ host: 'h', port: 22, keyType: 'ssh-rsa', key: keys.rsa.blob, file: '/f', line: 2 })).toMatch(/RSA .*revoked \(\/f:2\).*refusing/);
    expect(unknownMessage({ host: 'h', port: 2201, keyType: 'ssh-ed25519', files: ['/k'] })).toContain('ssh-keyscan -p 2201 h');
    expect(knownHostsName('Host', 22)).toBe('host');
  });
});

const skip = sshSkipReason();
if (skip) console.log(`SKIP known-hosts.test.ts real-sshd part: ${skip}`);

describe.skipIf(skip !== null)('against a real sshd and the real ssh client', () => {
  let c: SshCluster;
  let nodeKey: Key;
  let port: number;
  beforeAll(async () => {
    c = await startNodes(1, { cluster: 'kh-test' });
    const n = c.nodes[0]!;
    port = n.port;
    const [t, b64] = n.hostKeyPub.split(' ') as [string, string];
    nodeKey = { type: t, blob: Buffer.from(b64, 'base64'), text: n.hostKeyPub };
  });
  afterAll(async () => c?.stop());

  function ssh(knownHosts: string, strict: string) {
    const r = spawnSync(
      'ssh',
      ['-F', c.sshConfig, '-o', `UserKnownHostsFile=${knownHosts}`, '-o', `StrictHostKeyChecking=${strict}`, '-o', 'LogLevel=ERROR', 'kh-test', 'echo CONNECTED'],
      { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  it('matches what ssh-keyscan reports, plain and hashed', () => {
    const plain = spawnSync('ssh-keyscan', ['-p', String(port), '-t', 'ed25519', '127.0.0.1'], { encoding: 'utf8', timeout: 20_000 }).stdout;
    const hashed = spawnSync('ssh-keyscan', ['-H', '-p', String(port), '-t', 'ed25519', '127.0.0.1'], { encoding: 'utf8', timeout: 20_000 }).stdout;
    const fp = file(
      'scan_plain',
      plain.split('\n').filter((l) => l && !l.startsWith('#')),
    );
    const fh = file(
      'scan_hashed',
      hashed.split('\n').filter((l) => l && !l.startsWith('#')),
    );
    expect(fs.readFileSync(fh, 'utf8')).toMatch(/^\|1\|/);
    expect(check('127.0.0.1', port, nodeKey, [fp])).toEqual({ status: 'match', file: fp, line: 1 });
    expect(check('127.0.0.1', port, nodeKey, [fh])).toEqual({ status: 'match', file: fh, line: 1 });
    expect(check('127.0.0.1', port, keys.ed, [fh]).status).toBe('mismatch');
  });

  it('writes files the real ssh accepts under StrictHostKeyChecking=yes', async () => {
    for (const hash of [false, true]) {
      const f = path.join(dir, `written_${hash}`, 'known_hosts');
      expect(ssh(f, 'yes').code).toBe(255); // unknown: refused
      await appendKnownHost(f, '127.0.0.1', port, nodeKey.type, nodeKey.blob, { hash });
      const r = ssh(f, 'yes');
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe('CONNECTED\n');
    }
  });

  it('reads what ssh itself adds under accept-new', () => {
    const f = path.join(dir, 'ssh_added');
    fs.writeFileSync(f, '');
    expect(ssh(f, 'accept-new').code).toBe(0);
    expect(check('127.0.0.1', port, nodeKey, [f])).toMatchObject({ status: 'match', line: 1 });
  });

  it('reports the same offending line as ssh for a changed key; ssh proceeds only under `no`', () => {
    const f = file('changed', ['# old entries', `[127.0.0.1]:${port} ${keys.ed2.text}`, `[127.0.0.1]:${port} ${keys.rsa.text}`, `[127.0.0.1]:${port} ${keys.ecdsa.text}`]);
    const ours = check('127.0.0.1', port, nodeKey, [f]);
    // ssh names the last contradicting entry, not the first nor the one of the same key type.
    expect(ours).toEqual({ status: 'mismatch', file: f, line: 4, knownKeyType: 'ecdsa-sha2-nistp256' });
    for (const strict of ['yes', 'accept-new', 'ask']) {
      const r = ssh(f, strict);
      expect(r.code, strict).toBe(255);
      expect(hostKeyPolicy({ hostname: '127.0.0.1', port, strictHostKeyChecking: strict as 'yes', userKnownHostsFiles: [f], globalKnownHostsFiles: [] }).decide(ours.status)).toBe(
        'refuse',
      );
    }
    const loud = spawnSync('ssh', ['-F', c.sshConfig, '-o', `UserKnownHostsFile=${f}`, '-o', 'StrictHostKeyChecking=yes', 'kh-test', 'true'], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(loud.stderr).toContain(`Offending ECDSA key in ${f}:4`);
    // StrictHostKeyChecking=no: connects anyway, with password/keyboard-interactive auth turned off.
    const no = spawnSync('ssh', ['-F', c.sshConfig, '-o', `UserKnownHostsFile=${f}`, '-o', 'StrictHostKeyChecking=no', 'kh-test', 'echo CONNECTED'], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(no.status).toBe(0);
    expect(no.stdout).toBe('CONNECTED\n');
    expect(no.stderr).toMatch(/Password authentication is disabled to avoid man-in-the-middle attacks/);
    expect(fs.readFileSync(f, 'utf8')).not.toContain(nodeKey.text); // and the file is left alone
    expect(hostKeyPolicy({ hostname: '127.0.0.1', port, strictHostKeyChecking: 'no', userKnownHostsFiles: [f], globalKnownHostsFiles: [] }).decide('mismatch')).toBe('warn');
  });

  it('sees @revoked like ssh does', () => {
    const f = file('revoked_real', [`@revoked * ${nodeKey.text}`, `[127.0.0.1]:${port} ${nodeKey.text}`]);
    expect(check('127.0.0.1', port, nodeKey, [f])).toEqual({ status: 'revoked', file: f, line: 1 });
    const r = ssh(f, 'yes');
    expect(r.code).toBe(255);
    const loud = spawnSync('ssh', ['-F', c.sshConfig, '-o', `UserKnownHostsFile=${f}`, '-o', 'StrictHostKeyChecking=yes', 'kh-test', 'true'], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(loud.stderr).toMatch(/marked as revoked/);
  });
});
