import { fail, TaskError } from './errors.js';
import { describe, type YNode } from './tree.js';

export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

// SkyPilot's pattern, quirks included: "${A" and "$A}" also match, unknown names stay as written.
const VAR_REF = /\$\{?\b([a-zA-Z_][a-zA-Z0-9_]*)\b\}?/g;

export function substitute(s: string, vars: Readonly<Record<string, string>>): string {
  return s.replace(VAR_REF, (whole: string, name: string) => (Object.hasOwn(vars, name) ? (vars[name] as string) : whole));
}

/**
 * Read an envs:/secrets: section. Values come back as written (1 -> "1", true -> "true");
 * a null value stays null until overrides are applied.
 */
export function readVarSection(node: YNode | undefined, section: 'envs' | 'secrets', file: string): Map<string, string | null> {
  const out = new Map<string, string | null>();
  if (node === undefined) return out;
  if (node.kind === 'scalar' && node.value === null) return out;
  if (node.kind === 'seq' && section === 'secrets') {
    fail(
      file,
      section,
      'a list of managed secret names is a SkyPilot API-server feature skysync cannot resolve',
      'write a mapping NAME: value (or NAME: null and pass --secret NAME=VALUE)',
    );
  }
  if (node.kind !== 'map') {
    // A scalar under secrets: may itself be a secret: name its shape only.
    const got = section === 'secrets' ? (node.kind === 'seq' ? 'a list' : 'a single value') : describe(node);
    fail(file, section, `expected a mapping of NAME: value, got ${got}`, 'write one "NAME: value" per line under it');
  }
  for (const [name, value] of node.entries) {
    const key = `${section}.${name}`;
    if (!ENV_NAME.test(name)) {
      fail(file, key, 'not a valid environment variable name', 'use letters, digits and "_", not starting with a digit');
    }
    if (value.kind !== 'scalar') {
      // Never echo a secret's value; the shape is enough.
      fail(file, key, `expected a string, number or boolean, got ${value.kind === 'map' ? 'a mapping' : 'a list'}`, 'quote the value to pass it as text');
    }
    if (value.value === null) out.set(name, null);
    else out.set(name, value.text);
  }
  return out;
}

/**
 * "K=V" items from --env or --secret (split at the first "="); "K" alone takes process.env.K. Later items win.
 * Only names ever go into messages: a value may be a secret.
 */
export function parseEnvAssignments(list: string[], flag: '--env' | '--secret' = '--env'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list) {
    const eq = item.indexOf('=');
    const name = eq === -1 ? item : item.slice(0, eq);
    const shown = JSON.stringify(name);
    if (name === '') {
      throw new TaskError(`${flag}: ${JSON.stringify(eq === -1 ? item : '=...')} has no variable name; write ${flag} NAME=VALUE`);
    }
    if (!ENV_NAME.test(name)) {
      throw new TaskError(`${flag} ${shown}: not a valid environment variable name; use letters, digits and "_", not starting with a digit`);
    }
    if (eq === -1) {
      const v = process.env[name];
      if (v === undefined) {
        throw new TaskError(`${flag} ${name}: not set in the local environment; export ${name} first or pass ${flag} ${name}=VALUE`);
      }
      out[name] = v;
    } else {
      out[name] = item.slice(eq + 1);
    }
  }
  return out;
}

/**
 * A dotenv file (--env-file, --secret-file): NAME=VALUE lines, `export ` allowed, # comments, values in single
 * quotes taken as written, in double quotes with \n and \" escapes. Messages name the file and line, never a value.
 */
export function parseDotenv(text: string, file: string, flag: '--env-file' | '--secret-file'): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const m = /^(?:export\s+)?([^=\s]+)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new TaskError(`${flag} ${file}:${i + 1}: expected NAME=VALUE`);
    const name = m[1]!;
    if (!ENV_NAME.test(name)) throw new TaskError(`${flag} ${file}:${i + 1}: ${JSON.stringify(name)} is not a valid environment variable name`);
    let value = m[2]!;
    const q = value[0];
    if ((q === '"' || q === "'") && value.length > 1 && value.lastIndexOf(q) > 0) {
      value = value.slice(1, value.lastIndexOf(q));
      if (q === '"') value = value.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
    } else {
      value = value.replace(/\s+#.*$/, '');
    }
    out[name] = value;
  });
  return out;
}

/** Apply overrides (they win), then reject names left without a value, as SkyPilot does. */
export function finishVars(
  fromYaml: Map<string, string | null>,
  overrides: Readonly<Record<string, string>> | undefined,
  section: 'envs' | 'secrets',
  flag: '--env' | '--secret',
  file: string,
): Record<string, string> {
  const merged = new Map(fromYaml);
  for (const [k, v] of Object.entries(overrides ?? {})) {
    if (!ENV_NAME.test(k)) {
      throw new TaskError(`${flag} ${JSON.stringify(k)}: not a valid environment variable name; use letters, digits and "_", not starting with a digit`);
    }
    merged.set(k, v);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of merged) {
    if (v === null) {
      fail(file, `${section}.${k}`, 'has no value (null)', `set it in the YAML or pass ${flag} ${k}=VALUE (use ${k}: "" for an empty value)`);
    }
    out[k] = v;
  }
  return out;
}
