// `%` tokens and `${VAR}` in option values, expanded where OpenSSH expands them.

import os from 'node:os';
import { createHash } from 'node:crypto';
import { SshConfigError } from './types.js';

export interface TokenContext {
  alias: string;
  hostname: string;
  port: number;
  user: string;
  localUser: string;
  home: string;
  hostKeyAlias: string | null;
}

/** `%x` tokens from `allowed`, `%%`, and (when env is given) `${VAR}`. Unknown tokens are errors, as in ssh. */
export function expandTokens(s: string, ctx: TokenContext, allowed: string, env: NodeJS.ProcessEnv | null, what: string): string {
  const localHost = os.hostname();
  const value = (c: string): string => {
    switch (c) {
      case 'h':
        return ctx.hostname;
      case 'p':
        return String(ctx.port);
      case 'r':
        return ctx.user;
      case 'n':
        return ctx.alias;
      case 'u':
        return ctx.localUser;
      case 'd':
        return ctx.home;
      case 'i':
        return String(process.getuid?.() ?? '');
      case 'l':
        return localHost;
      case 'L':
        return localHost.split('.')[0]!;
      case 'k':
        return ctx.hostKeyAlias ?? ctx.alias;
      case 'C':
        return createHash('sha1').update(`${localHost}${ctx.hostname}${ctx.port}${ctx.user}`).digest('hex');
      default:
        throw new SshConfigError(`${what}: unknown token %${c} in "${s}"`);
    }
  };
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch === '%') {
      const c = s[i + 1];
      if (c === undefined) throw new SshConfigError(`${what}: "%" at the end of "${s}"`);
      i++;
      if (c === '%') out += '%';
      else if (allowed.includes(c)) out += value(c);
      else throw new SshConfigError(`${what}: unknown token %${c} in "${s}"`);
    } else if (ch === '$' && env && s[i + 1] === '{') {
      const end = s.indexOf('}', i + 2);
      if (end < 0) throw new SshConfigError(`${what}: unterminated \${ in "${s}"`);
      const name = s.slice(i + 2, end);
      const v = env[name];
      if (v === undefined) throw new SshConfigError(`${what}: environment variable \${${name}} is not set ("${s}")`);
      out += v;
      i = end;
    } else out += ch;
  }
  return out;
}

export const FILE_TOKENS = 'CdhiklLnpru';
