// What a config names without resolving anything: every Host pattern, the SkyPilot worker aliases, whether an
// alias is named at all.

import fs from 'node:fs';
import path from 'node:path';
import { passwdHome } from './local-user.js';
import { matchPattern } from './match.js';
import { globPaths, includeTarget, MAX_INCLUDE_DEPTH, parseLine, type Line } from './parse.js';
import { SshConfigError } from './types.js';

/** Every pattern of every `Host` line of a config (following Includes), in order, each once. */
export function hostPatterns(configFile?: string, opts: { home?: string; env?: NodeJS.ProcessEnv } = {}): string[] {
  const home = opts.home ?? opts.env?.HOME ?? passwdHome();
  const found = new Set<string>();
  const seen = new Set<string>();
  const scan = (file: string, depth: number, required: boolean): void => {
    if (depth > MAX_INCLUDE_DEPTH || seen.has(file)) return;
    seen.add(file);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      if (required) throw new SshConfigError(`cannot read ssh config ${file}: ${(e as Error).message}`);
      return;
    }
    for (const raw of text.split('\n')) {
      let l: Line | null;
      try {
        l = parseLine(raw);
      } catch {
        continue;
      }
      if (!l) continue;
      if (l.keyword === 'host') for (const p of l.args) found.add(p);
      else if (l.keyword === 'include') {
        for (const a of l.args) {
          const target = includeTarget(a, true, home, file);
          if (target) for (const f of globPaths(target)) scan(f, depth + 1, false);
        }
      }
    }
  };
  scan(configFile ?? path.join(home, '.ssh', 'config'), 0, configFile !== undefined);
  return [...found];
}

/**
 * The `<cluster>-workerN` aliases a config defines (following Includes), sorted by N. SkyPilot names worker
 * nodes so; the head is `<cluster>` itself.
 */
export async function listWorkers(cluster: string, configFile?: string, opts: { home?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string[]> {
  const re = new RegExp(`^${cluster.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-worker(\\d+)$`);
  const found = new Map<string, number>();
  for (const p of hostPatterns(configFile, opts)) {
    const m = re.exec(p);
    if (m) found.set(p, Number(m[1]));
  }
  return [...found].sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0])).map(([alias]) => alias);
}

/**
 * Whether a config names `alias`: a Host line with it, or with a pattern other than a catch-all `*` that it
 * matches (a negated pattern is left aside). The aliases it does name, for a suggestion.
 */
export function configNames(alias: string, configFile?: string, opts: { home?: string; env?: NodeJS.ProcessEnv } = {}): { named: boolean; aliases: string[] } {
  const patterns = hostPatterns(configFile, opts);
  const aliases = patterns.filter((p) => !/[*?!]/.test(p));
  const named = aliases.includes(alias) || patterns.some((p) => p !== '*' && !p.startsWith('!') && /[*?]/.test(p) && matchPattern(alias, p));
  return { named, aliases };
}
