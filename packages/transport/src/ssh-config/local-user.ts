// The local user as OpenSSH sees it: home and name from the passwd database, not from $HOME.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export function passwdHome(): string {
  try {
    return os.userInfo().homedir;
  } catch {
    return os.homedir();
  }
}

export function localUserName(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.env.USER ?? String(process.getuid?.() ?? 'unknown');
  }
}

/** `~` and `~/x` → home; `~user/x` → that user's home from /etc/passwd (left alone when unknown). */
export function tildeExpand(p: string, home: string): string {
  if (p === '~') return home;
  if (p.startsWith('~/')) return path.join(home, p.slice(2));
  const m = /^~([^/]+)(\/.*)?$/.exec(p);
  if (m) {
    try {
      for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
        const f = line.split(':');
        if (f[0] === m[1] && f[5]) return f[5] + (m[2] ?? '');
      }
    } catch {
      /* no passwd file */
    }
  }
  return p;
}
