// Lexing ssh_config lines (quotes, escapes, comments) and locating the files an Include names.

import fs from 'node:fs';
import path from 'node:path';
import { tildeExpand } from './local-user.js';
import { SshConfigError } from './types.js';

export const MAX_INCLUDE_DEPTH = 16;

export interface Line {
  keyword: string;
  /** Arguments split the way ssh does (quotes, backslash escapes, `#` comments). */
  args: string[];
  /** Everything after the keyword and separator, untouched (ProxyCommand, ProxyJump). */
  rest: string;
}

function splitArgs(s: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < s.length) {
    while (i < s.length && /[ \t]/.test(s[i]!)) i++;
    if (i >= s.length || s[i] === '#') break; // a comment starts where an argument would
    let arg = '';
    let quote: string | null = null;
    for (; i < s.length; i++) {
      const c = s[i]!;
      if (quote === null && /[ \t]/.test(c)) break;
      if (c === '\\' && i + 1 < s.length) {
        const n = s[i + 1]!;
        if (n === "'" || n === '"' || n === '\\' || (quote === null && n === ' ')) {
          arg += n;
          i++;
          continue;
        }
      }
      if (quote === null && (c === '"' || c === "'")) quote = c;
      else if (quote !== null && c === quote) quote = null;
      else arg += c;
    }
    if (quote !== null) throw new SshConfigError(`unterminated quote in "${s}"`);
    out.push(arg);
  }
  return out;
}

export function parseLine(raw: string): Line | null {
  const line = raw.replace(/[\s]+$/, '');
  const m = /^[ \t]*([^ \t=]+)[ \t]*(?:=[ \t]*)?(.*)$/.exec(line);
  if (!m || m[1]!.startsWith('#')) return null;
  return { keyword: m[1]!.toLowerCase(), args: splitArgs(m[2]!), rest: m[2]! };
}

/** glob(3) for Include: `*`, `?`, `[...]` per path segment, no match for a leading dot unless written; sorted. */
export function globPaths(pattern: string): string[] {
  const magic = /[*?[]/;
  if (!magic.test(pattern)) return fs.existsSync(pattern) ? [pattern] : [];
  const abs = path.isAbsolute(pattern);
  const segs = pattern.split('/').filter((s, i) => s !== '' || i === 0);
  let bases = [abs ? '/' : '.'];
  for (const seg of segs.slice(abs ? 1 : 0)) {
    const next: string[] = [];
    for (const b of bases) {
      if (!magic.test(seg)) {
        const p = path.join(b, seg);
        if (fs.existsSync(p)) next.push(p);
        continue;
      }
      let names: string[];
      try {
        names = fs.readdirSync(b);
      } catch {
        continue;
      }
      const re = globSegmentRegex(seg);
      for (const n of names.sort()) if (re.test(n) && (!n.startsWith('.') || seg.startsWith('.'))) next.push(path.join(b, n));
    }
    bases = next;
  }
  return bases.map((p) => (abs ? p : path.relative('.', p))).sort();
}

function globSegmentRegex(seg: string): RegExp {
  let re = '^';
  for (let i = 0; i < seg.length; i++) {
    const c = seg[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = seg.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        let body = seg.slice(i + 1, end);
        if (body.startsWith('!')) body = `^${body.slice(1)}`;
        re += `[${body.replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`${re}$`);
}

/** Where an Include argument points: `~` expanded (user configs only), relative to ~/.ssh or /etc/ssh. */
export function includeTarget(arg: string, userConf: boolean, home: string, file: string): string | null {
  if (arg.startsWith('~')) {
    if (!userConf) throw new SshConfigError(`${file}: Include "${arg}": tilde expansion is not supported in the system config`);
    return tildeExpand(arg, home);
  }
  if (path.isAbsolute(arg)) return arg;
  return userConf ? path.join(home, '.ssh', arg) : path.join('/etc/ssh', arg);
}
