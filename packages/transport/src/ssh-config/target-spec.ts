// Target specs as users type them (`user@host:port`, `ssh://...`) and ProxyJump hop lists.

import { TargetError } from '../target.js';
import type { TargetSpec } from './types.js';

function parsePort(s: string, spec: string): number {
  if (!/^\d{1,5}$/.test(s)) throw new TargetError(`bad port "${s}" in "${spec}"`);
  const n = Number(s);
  if (n < 1 || n > 65535) throw new TargetError(`port ${n} out of range in "${spec}"`);
  return n;
}

function checkHostName(host: string, spec: string): void {
  if (!host) throw new TargetError(`no host in "${spec}"`);
  if (host.startsWith('-')) throw new TargetError(`host may not start with "-": "${spec}"`);
  if (/[\s\x00-\x1f\x7f'"`\\]/.test(host)) throw new TargetError(`invalid characters in host of "${spec}"`);
}

/**
 * Splits `alias`, `user@host`, `user@host:port`, `host:port`, `ssh://[user@]host[:port]` (IPv6 in brackets:
 * `user@[::1]:22`) into the alias to resolve and the user/port that override the config.
 */
export function parseTargetSpec(spec: string): TargetSpec {
  let rest = spec.trim();
  const uri = /^ssh:\/\//i.test(rest);
  if (uri) {
    rest = rest.slice(6);
    if (rest.endsWith('/')) rest = rest.slice(0, -1);
    if (rest.includes('/')) throw new TargetError(`an ssh:// target takes no path: "${spec}"`);
  }
  let user: string | null = null;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    user = rest.slice(0, at);
    rest = rest.slice(at + 1);
    if (uri) user = user.split(';')[0]!; // ssh://user;params@host
    if (!user) throw new TargetError(`empty user in "${spec}"`);
    if (/[\s\x00-\x1f\x7f]/.test(user)) throw new TargetError(`invalid characters in user of "${spec}"`);
  }
  let port: number | null = null;
  let host = rest;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0) throw new TargetError(`unclosed "[" in "${spec}"`);
    host = rest.slice(1, close);
    const after = rest.slice(close + 1);
    if (after.startsWith(':')) port = parsePort(after.slice(1), spec);
    else if (after) throw new TargetError(`unexpected "${after}" after "]" in "${spec}"`);
  } else {
    const colons = rest.split(':').length - 1;
    if (colons === 1) {
      const i = rest.indexOf(':');
      host = rest.slice(0, i);
      port = parsePort(rest.slice(i + 1), spec);
    } // several colons without brackets: an IPv6 address, no port
  }
  checkHostName(host, spec);
  return { alias: host, user, port };
}

/** One hop of a ProxyJump list: `[user@]host[:port]` or `ssh://...`. */
export function parseProxyJump(s: string): TargetSpec[] {
  if (s.trim().toLowerCase() === 'none') return [];
  return s
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean)
    .map((h) => parseTargetSpec(h));
}
