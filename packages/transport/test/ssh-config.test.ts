// resolveHost both ways — the real `ssh -G` and the fallback parser — against the same fixture configs in a
// temporary home, including SkyPilot's generated shape (`Include ~/.sky/generated/ssh/*`).
//
// `ssh` takes ~ and ~/.ssh/config from the passwd database, not from $HOME, so the `ssh -G` side runs ssh as a
// throwaway Unix user whose passwd home is the temporary home (needs root and setpriv; skipped otherwise).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listWorkers, parseProxyJump, parseTargetSpec, resolveHost, SshConfigError, type ResolveOptions, type ResolvedHost } from '../src/ssh-config/index.js';
import { TargetError } from '../src/target.js';
import { claimUser, type ClaimedUser } from '../../../test/helpers/sshd.js';

function whichSsh(): string | null {
  try {
    return execFileSync('sh', ['-c', 'command -v ssh'], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

const SSH = whichSsh();
const sshGSkip = !SSH
  ? 'no ssh binary'
  : process.getuid?.() !== 0
    ? 'not root: cannot run ssh as a user whose passwd home is the fixture home'
    : !fs.existsSync('/usr/bin/setpriv')
      ? 'no setpriv'
      : null;
if (sshGSkip) console.log(`SKIP ssh-config.test.ts "ssh -G" side: ${sshGSkip}`);

let H: string; // the fixture home
let claimed: ClaimedUser | undefined;
let wrapper: string;

function write(rel: string, text: string): string {
  const p = path.join(H, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true, mode: 0o755 });
  fs.writeFileSync(p, text, { mode: 0o644 });
  return p;
}

const SKY_PROXY = 'ssh -W %h:%p -i ~/.ssh/sky-key -o Port=22 -o StrictHostKeyChecking=no ubuntu@34.1.2.3';

function skyBlock(alias: string, host: string, port: number): string {
  return [
    `Host ${alias}`,
    `  HostName ${host}`,
    '  User ubuntu',
    '  IdentityFile ~/.ssh/sky-key',
    '  AddKeysToAgent yes',
    '  IdentitiesOnly yes',
    '  ForwardAgent yes',
    '  StrictHostKeyChecking no',
    '  UserKnownHostsFile=/dev/null',
    '  GlobalKnownHostsFile=/dev/null',
    `  Port ${port}`,
    `  ProxyCommand ${SKY_PROXY}`,
    '',
  ].join('\n');
}

beforeAll(async () => {
  H = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-sshcfg-'));
  fs.chmodSync(H, 0o755);
  write(
    '.ssh/config',
    `# Added by SkyPilot for ssh config of all clusters
Include ~/.sky/generated/ssh/*
Include conf.d/*.conf

Host jumpy
  HostName 10.0.0.5
  ProxyJump bastion1,ops@bastion2:2222
  ProxyCommand ssh -W %h:%p ignored-because-proxyjump-came-first

Host bastion1
  HostName bastion1.example.com
  User jumper
  Port 2022

Host pc-first
  ProxyCommand nc -X connect -x proxy:3128 %h %p
  ProxyJump never-used

Host no-proxy
  ProxyCommand none
Host no-proxy *.behind
  ProxyJump bastion1

Host tokens
  HostName Tokens.Example.COM
  User remoteuser
  Port 2200
  IdentityFile ~/.ssh/id_%h_%p_%r
  IdentityFile %d/keys/%n-%%
  IdentityFile ~/.ssh/dup
  IdentityFile "~/.ssh/dup"
  UserKnownHostsFile ~/.ssh/kh_%h_%p %d/.ssh/kh_%n
  ConnectTimeout 1m30s
  ServerAliveInterval=15
  ServerAliveCountMax = 5
  HostKeyAlias tokens-alias
  # first value wins: these are ignored
  Port 9999
  User ignored

Host *.corp !secret.corp
  User corpuser
  StrictHostKeyChecking accept-new

Host db? "q-host"
  HostName %h.internal
  StrictHostKeyChecking off   # the same as no

Host scoped
  Include scoped.conf

Host MixedCase
  User mixed

Host *
  User fallback
  IdentitiesOnly no
  ServerAliveInterval 30
`,
  );
  write('.ssh/conf.d/a.conf', 'Host included-a\n  HostName a.example\n');
  write('.ssh/conf.d/.hidden.conf', 'Host included-a\n  HostName hidden.example\n'); // `*` skips dotfiles
  write('.ssh/conf.d/b.conf.disabled', 'Host included-a\n  HostName disabled.example\n');
  write('.ssh/scoped.conf', 'User scoped-user\nHost scoped-inner\n  User inner-user\n');
  write(
    '.sky/generated/ssh/mycluster',
    `# Added by SkyPilot for ssh config of mycluster\n${skyBlock('mycluster', '127.0.0.1', 2201)}\n` +
      skyBlock('mycluster-worker1', '10.128.0.12', 22) +
      skyBlock('mycluster-worker10', '10.128.0.21', 22) +
      skyBlock('mycluster-worker2', '10.128.0.13', 22),
  );
  write('.sky/generated/ssh/other', skyBlock('other', '10.1.0.2', 22) + skyBlock('other-worker1', '10.1.0.3', 22) + 'Host mycluster-workerX other-worker7-old\n');
  // A -F file: the system config is not read then (no HashKnownHosts from Debian's /etc/ssh/ssh_config).
  write(
    'alt/ssh_config',
    `Include ${H}/.sky/generated/ssh/mycluster
Host alt
  HostName alt.example
  IdentityFile ~/alt-key
Host alt-worker3 alt-worker1
`,
  );
  write('loop/ssh_config', `Include ${H}/loop/ssh_config\n`);
  write('match/ssh_config', `Match exec "touch ${H}/match/pwned"\n  User matched\nHost *\n  User plain\n`);

  if (!sshGSkip) {
    claimed = await claimUser('skysync-cfg', H);
    wrapper = path.join(H, 'ssh-as-fixture-user');
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec /usr/bin/setpriv --reuid=${claimed.uid} --regid=${claimed.gid} --clear-groups ${SSH} "$@"\n`, { mode: 0o755 });
  }
});

afterAll(() => {
  claimed?.release();
  if (H) fs.rmSync(H, { recursive: true, force: true });
});

type Way = 'parser' | 'ssh -G';
function opts(way: Way, extra: ResolveOptions = {}): ResolveOptions {
  const env = { ...process.env, HOME: H };
  if (way === 'parser') return { via: 'parser', home: H, env, localUser: claimed?.user ?? 'tester', ...extra };
  return { via: 'ssh -G', home: H, env, sshBinary: wrapper, localUser: claimed?.user, ...extra };
}

const ways: Array<[Way, string | null]> = [
  ['parser', null],
  ['ssh -G', sshGSkip],
];

describe.each(ways)('resolveHost via %s', (way, skip) => {
  const r = (alias: string, extra: ResolveOptions = {}) => resolveHost(alias, opts(way, extra));
  const home = () => H;

  it.skipIf(skip !== null)('resolves a SkyPilot head and workers through Include ~/.sky/generated/ssh/*', async () => {
    const head = await r('mycluster');
    expect(head).toEqual({
      alias: 'mycluster',
      hostname: '127.0.0.1',
      user: 'ubuntu',
      port: 2201,
      identityFiles: [`${home()}/.ssh/sky-key`],
      identitiesOnly: true,
      proxyJump: null,
      proxyCommand: 'ssh -W 127.0.0.1:2201 -i ~/.ssh/sky-key -o Port=22 -o StrictHostKeyChecking=no ubuntu@34.1.2.3',
      strictHostKeyChecking: 'no',
      userKnownHostsFiles: ['/dev/null'],
      globalKnownHostsFiles: ['/dev/null'],
      connectTimeoutMs: null,
      serverAliveIntervalSec: 30,
      serverAliveCountMax: 3,
      hostKeyAlias: null,
      hashKnownHosts: head.hashKnownHosts, // from the system config, whatever it says
      via: way,
    });
    const w10 = await r('mycluster-worker10');
    expect([w10.hostname, w10.port, w10.user]).toEqual(['10.128.0.21', 22, 'ubuntu']);
    expect(w10.proxyCommand).toBe('ssh -W 10.128.0.21:22 -i ~/.ssh/sky-key -o Port=22 -o StrictHostKeyChecking=no ubuntu@34.1.2.3');
  });

  it.skipIf(skip !== null)('expands tokens and ~, keeps the first value, dedupes IdentityFile', async () => {
    const t = await r('tokens');
    expect(t).toMatchObject({
      hostname: 'tokens.example.com',
      user: 'remoteuser',
      port: 2200,
      identityFiles: [`${home()}/.ssh/id_tokens.example.com_2200_remoteuser`, `${home()}/keys/tokens-%`, `${home()}/.ssh/dup`],
      userKnownHostsFiles: [`${home()}/.ssh/kh_tokens.example.com_2200`, `${home()}/.ssh/kh_tokens`],
      globalKnownHostsFiles: ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'],
      connectTimeoutMs: 90_000,
      serverAliveIntervalSec: 15,
      serverAliveCountMax: 5,
      hostKeyAlias: 'tokens-alias',
      strictHostKeyChecking: 'ask',
    });
  });

  it.skipIf(skip !== null)('ProxyJump chains, and whichever of ProxyJump/ProxyCommand comes first wins', async () => {
    const j = await r('jumpy');
    expect([j.proxyJump, j.proxyCommand]).toEqual(['bastion1,ops@bastion2:2222', null]);
    const hops = parseProxyJump(j.proxyJump!);
    expect(hops).toEqual([
      { alias: 'bastion1', user: null, port: null },
      { alias: 'bastion2', user: 'ops', port: 2222 },
    ]);
    const b = await r(hops[0]!.alias);
    expect([b.hostname, b.user, b.port]).toEqual(['bastion1.example.com', 'jumper', 2022]);
    const pc = await r('pc-first');
    expect([pc.proxyJump, pc.proxyCommand]).toEqual([null, 'nc -X connect -x proxy:3128 pc-first 22']);
    const none = await r('no-proxy');
    expect([none.proxyJump, none.proxyCommand]).toEqual([null, null]);
    expect((await r('x.behind')).proxyJump).toBe('bastion1');
  });

  it.skipIf(skip !== null)('matches Host patterns with *, ?, !negation and quotes, case-sensitively', async () => {
    expect((await r('a.corp')).user).toBe('corpuser');
    expect((await r('a.corp')).strictHostKeyChecking).toBe('accept-new');
    expect((await r('secret.corp')).user).toBe('fallback');
    const db = await r('db1');
    expect([db.hostname, db.strictHostKeyChecking]).toEqual(['db1.internal', 'no']);
    expect((await r('db12')).hostname).toBe('db12');
    expect((await r('q-host')).hostname).toBe('q-host.internal');
    expect((await r('MixedCase')).user).toBe('mixed');
    const lower = await r('mixedcase');
    expect([lower.user, lower.hostname]).toEqual(['fallback', 'mixedcase']);
    // The alias is matched as typed; the hostname comes back lowercased.
    const upper = await r('MyCluster');
    expect([upper.alias, upper.hostname, upper.user, upper.port]).toEqual(['MyCluster', 'mycluster', 'fallback', 22]);
  });

  it.skipIf(skip !== null)('follows Include globs relative to ~/.ssh, and scopes an Include inside a Host block', async () => {
    expect((await r('included-a')).hostname).toBe('a.example');
    expect((await r('scoped')).user).toBe('scoped-user');
    // The Include sits in `Host scoped`: for any other alias the file is not read, its Host blocks included.
    expect((await r('scoped-inner')).user).toBe('fallback');
  });

  it.skipIf(skip !== null)('resolves an alias nothing mentions as a hostname with the defaults', async () => {
    const n = await r('nobody-knows.example');
    expect(n).toMatchObject({
      hostname: 'nobody-knows.example',
      port: 22,
      user: 'fallback',
      proxyJump: null,
      proxyCommand: null,
      connectTimeoutMs: null,
      strictHostKeyChecking: 'ask',
      userKnownHostsFiles: [`${home()}/.ssh/known_hosts`, `${home()}/.ssh/known_hosts2`],
    });
    expect(n.identityFiles[0]).toBe(`${home()}/.ssh/id_rsa`);
    expect(n.identityFiles).toContain(`${home()}/.ssh/id_ed25519`);
  });

  it.skipIf(skip !== null)('lets user@host:port and ssh://user@host:port override the config', async () => {
    const a = await r('ops@bastion1:2999');
    expect([a.alias, a.hostname, a.user, a.port]).toEqual(['bastion1', 'bastion1.example.com', 'ops', 2999]);
    const b = await r('ssh://root@mycluster:2300');
    expect([b.user, b.port, b.identitiesOnly]).toEqual(['root', 2300, true]);
    // %r and %p see the overrides.
    const t = await r('me@tokens:2400');
    expect(t.identityFiles[0]).toBe(`${home()}/.ssh/id_tokens.example.com_2400_me`);
    const o = await r('mycluster', { user: 'opt-user', port: 2500 });
    expect([o.user, o.port]).toEqual(['opt-user', 2500]);
  });

  it.skipIf(skip !== null)('reads only the -F file when one is given', async () => {
    const cfg = path.join(H, 'alt/ssh_config');
    const a = await r('alt', { configFile: cfg });
    expect([a.hostname, a.identityFiles, a.user, a.hashKnownHosts]).toEqual(['alt.example', [`${home()}/alt-key`], claimed?.user ?? 'tester', false]);
    expect((await r('mycluster', { configFile: cfg })).port).toBe(2201);
    expect((await r('tokens', { configFile: cfg })).hostname).toBe('tokens');
  });

  it.skipIf(skip !== null)('fails on a missing -F file and on an Include loop', async () => {
    await expect(r('x', { configFile: path.join(H, 'does-not-exist') })).rejects.toThrow(SshConfigError);
    await expect(r('x', { configFile: path.join(H, 'loop/ssh_config') })).rejects.toThrow(SshConfigError);
  });
});

describe.skipIf(sshGSkip !== null)('ssh -G and the parser agree', () => {
  const aliases = [
    'mycluster',
    'mycluster-worker1',
    'mycluster-worker2',
    'mycluster-worker10',
    'other-worker1',
    'jumpy',
    'bastion1',
    'pc-first',
    'no-proxy',
    'y.behind',
    'tokens',
    'a.corp',
    'secret.corp',
    'db7',
    'q-host',
    'scoped',
    'scoped-inner',
    'included-a',
    'MixedCase',
    'MyCluster',
    'unknown-host.example',
    '192.168.1.1',
    'ops@jumpy:2022',
    'ssh://u@tokens:2300',
  ];
  it.each(aliases)('%s', async (alias) => {
    const viaSsh = await resolveHost(alias, opts('ssh -G'));
    const viaParser = await resolveHost(alias, opts('parser'));
    expect({ ...viaParser, via: 'ssh -G' }).toEqual(viaSsh);
  });
  it('with -F', async () => {
    const configFile = path.join(H, 'alt/ssh_config');
    for (const alias of ['alt', 'mycluster', 'mycluster-worker2', 'nothing']) {
      const viaSsh = await resolveHost(alias, opts('ssh -G', { configFile }));
      const viaParser = await resolveHost(alias, opts('parser', { configFile }));
      expect({ ...viaParser, via: 'ssh -G' }).toEqual(viaSsh);
    }
  });
});

describe('the parser alone', () => {
  it('never executes Match blocks (skips them)', async () => {
    const res = await resolveHost('anything', opts('parser', { configFile: path.join(H, 'match/ssh_config') }));
    expect(res.user).toBe('plain');
    expect(fs.existsSync(path.join(H, 'match/pwned'))).toBe(false);
  });

  it('is what `auto` uses when there is no ssh binary', async () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-nossh-'));
    try {
      const res = await resolveHost('mycluster', { env: { PATH: empty, HOME: H }, systemConfigFile: null });
      expect(res.via).toBe('parser');
      expect(res.port).toBe(2201);
      expect(res.hashKnownHosts).toBe(false); // no system config read
      await expect(resolveHost('mycluster', { env: { PATH: empty, HOME: H }, via: 'ssh -G' })).rejects.toThrow(/no ssh binary/);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });

  it('defaults User to the local user and reads the system config after the user config', async () => {
    const sys = write('sys/ssh_config', 'Host *\n  HashKnownHosts yes\n  Port 2022\n');
    const res = await resolveHost('plain', { via: 'parser', home: path.join(H, 'empty-home'), env: { HOME: H }, systemConfigFile: sys });
    expect([res.user, res.port, res.hashKnownHosts]).toEqual([os.userInfo().username, 2022, true]);
  });

  it.skipIf(!SSH)('uses ssh -G by default when ssh exists', async () => {
    const res = await resolveHost('some-host.example', { configFile: path.join(H, 'alt/ssh_config') });
    expect(res.via).toBe('ssh -G');
    expect(res.hostname).toBe('some-host.example');
  });
});

describe('listWorkers', () => {
  it('lists <cluster>-workerN from the config and its Includes, sorted by N', async () => {
    expect(await listWorkers('mycluster', undefined, { home: H })).toEqual(['mycluster-worker1', 'mycluster-worker2', 'mycluster-worker10']);
    expect(await listWorkers('other', undefined, { home: H })).toEqual(['other-worker1']);
    expect(await listWorkers('nope', undefined, { home: H })).toEqual([]);
    expect(await listWorkers('alt', path.join(H, 'alt/ssh_config'), { home: H })).toEqual(['alt-worker1', 'alt-worker3']);
    expect(await listWorkers('mycluster', path.join(H, 'alt/ssh_config'), { home: H })).toHaveLength(3);
    await expect(listWorkers('x', path.join(H, 'missing'))).rejects.toThrow(SshConfigError);
  });
});

describe('parseTargetSpec', () => {
  it.each([
    ['mycluster', { alias: 'mycluster', user: null, port: null }],
    ['ubuntu@mycluster', { alias: 'mycluster', user: 'ubuntu', port: null }],
    ['ubuntu@10.0.0.1:2222', { alias: '10.0.0.1', user: 'ubuntu', port: 2222 }],
    ['host:2222', { alias: 'host', user: null, port: 2222 }],
    ['ssh://ubuntu@host:2222', { alias: 'host', user: 'ubuntu', port: 2222 }],
    ['ssh://host/', { alias: 'host', user: null, port: null }],
    ['ssh://me;fingerprint=x@host', { alias: 'host', user: 'me', port: null }],
    ['me@corp.com@host', { alias: 'host', user: 'me@corp.com', port: null }],
    ['u@[::1]:22', { alias: '::1', user: 'u', port: 22 }],
    ['fe80::1', { alias: 'fe80::1', user: null, port: null }],
  ] as const)('%s', (spec, want) => {
    expect(parseTargetSpec(spec)).toEqual(want);
  });

  it.each(['', 'user@', '@host', 'host:abc', 'host:0', 'host:70000', '-oProxyCommand=touch', 'ssh://h/path', 'a b', '[::1'])('rejects %j', (spec) => {
    expect(() => parseTargetSpec(spec)).toThrow(TargetError);
  });

  it('resolves the spec in resolveHost too', async () => {
    const res: ResolvedHost = await resolveHost('ops@nowhere.example:2022', { via: 'parser', home: H, systemConfigFile: null, configFile: path.join(H, 'alt/ssh_config') });
    expect([res.alias, res.hostname, res.user, res.port]).toEqual(['nowhere.example', 'nowhere.example', 'ops', 2022]);
  });
});
