import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fail, q, TaskError } from './errors.js';
import { finishVars, readVarSection, substitute } from './envs.js';
import { readFileMounts, type FileMount } from './mounts.js';
import { expandHome, resolveLocal, statFollow } from './paths.js';
import { didYouMean } from './suggest.js';
import { describe, parseYaml, type YNode } from './tree.js';

export interface LoadOptions {
  /** --env K=V overrides: they win over envs: in the YAML. */
  env?: Record<string, string>;
  /** --secret K=V overrides: they win over secrets: in the YAML (and fill its null values). */
  secrets?: Record<string, string>;
  /** The current directory: relative workdir and sources resolve against it (default process.cwd()). */
  cwd?: string;
}

export interface Task {
  /** Absolute path of the YAML. */
  file: string;
  name: string | null;
  /** Absolute local directory, after env substitution and ~ expansion. */
  workdir: string | null;
  /** Not substituted: the remote shell expands $VARS from the exported envs. */
  setup: string | null;
  run: string | null;
  /** envs: merged with --env (which wins); values as written (1 -> "1", true -> "true"). */
  envs: Record<string, string>;
  /** Exported like envs (a secret wins over an env of the same name, as in SkyPilot); never print these values. */
  secrets: Record<string, string>;
  numNodes: number;
  /** resources.accelerators' count (SKYPILOT_NUM_GPUS_PER_NODE): `A100:8` is 8, `A100` is 1, none is 0. */
  gpusPerNode: number;
  /** In YAML order. */
  fileMounts: FileMount[];
  /** Keys SkyPilot accepts that skysync does not use: top-level keys, then storage fields as key paths. */
  ignoredKeys: string[];
}

const USED_KEYS = ['name', 'workdir', 'setup', 'run', 'envs', 'secrets', 'num_nodes', 'file_mounts'];
/** The rest of SkyPilot's task schema (sky/utils/schemas.py), plus "experimental" from older releases. */
const SKYPILOT_ONLY_KEYS = [
  'resources',
  'service',
  'pool',
  'config',
  'event_callback',
  'inputs',
  'outputs',
  'volumes',
  'managed_secrets',
  'experimental',
  'volume_mounts',
  'file_mounts_mapping',
  'api_server_access',
  '_metadata',
];
const VALID_NAME = /^[a-zA-Z0-9]+(?:[._-]{1,2}[a-zA-Z0-9]+)*$/;

function isNull(node: YNode | undefined): node is undefined {
  return node === undefined || (node.kind === 'scalar' && node.value === null);
}

function readName(node: YNode | undefined, file: string): string | null {
  if (isNull(node)) return null;
  if (node.kind !== 'scalar' || typeof node.value !== 'string') fail(file, 'name', `expected a string, got ${describe(node)}`, 'quote it or remove it');
  if (!VALID_NAME.test(node.value)) {
    fail(file, 'name', `${q(node.value)} is not a valid task name`, 'use letters and digits, joined by at most two of ".", "_" or "-" (e.g. my-task)');
  }
  return node.value;
}

function readCommands(node: YNode | undefined, key: 'setup' | 'run', file: string): string | null {
  if (isNull(node)) return null;
  if (node.kind === 'seq') fail(file, key, 'expected a string, got a list', `write the commands as one block ("${key}: |" then one command per line)`);
  if (node.kind !== 'scalar' || typeof node.value !== 'string') fail(file, key, `expected a string, got ${describe(node)}`, `quote it or write it as a block ("${key}: |")`);
  return node.value;
}

function readNumNodes(node: YNode | undefined, file: string): number {
  if (isNull(node)) return 1;
  if (node.kind !== 'scalar' || typeof node.value !== 'bigint' || node.value <= 0n) {
    fail(file, 'num_nodes', `expected a positive integer, got ${describe(node)}`, 'write a whole number such as num_nodes: 2');
  }
  return Number(node.value);
}

/** The GPU count of resources.accelerators (its first choice when it lists several); SkyPilot rounds a fraction up. */
function readGpus(resources: YNode | undefined): number {
  let acc = resources?.kind === 'map' ? resources.entries.get('accelerators') : undefined;
  if (acc?.kind === 'seq') acc = acc.items[0];
  if (!acc || isNull(acc)) return 0;
  if (acc.kind === 'map') {
    const first = [...acc.entries.values()][0];
    return first?.kind === 'scalar' && first.value !== null ? Math.ceil(Number(first.text) || 1) : 1;
  }
  if (acc.kind !== 'scalar' || typeof acc.value !== 'string') return 0;
  const count = acc.value.split(':')[1];
  return count === undefined ? 1 : Math.ceil(Number(count) || 1);
}

function readWorkdir(node: YNode | undefined, file: string, cwd: string, vars: Record<string, string>): string | null {
  if (isNull(node)) return null;
  if (node.kind === 'map') {
    fail(file, 'workdir', 'a git repository (url/ref) workdir is not supported by skysync', 'clone the repository and set workdir to the local directory');
  }
  if (node.kind !== 'scalar' || typeof node.value !== 'string') fail(file, 'workdir', `expected a directory path, got ${describe(node)}`, 'write a path such as workdir: .');
  const written = substitute(node.value, vars);
  const abs = resolveLocal(written, cwd);
  const shown = abs === written ? q(written) : `${q(written)} (${abs})`;
  const st = statFollow(abs);
  if (st.kind === 'missing') fail(file, 'workdir', `${shown} does not exist`, `create it or fix the path (relative paths start from the current directory, ${cwd})`);
  if (st.kind === 'error') fail(file, 'workdir', `${shown} cannot be read (${st.code})`, 'fix its permissions or the symlink it points through');
  if (st.kind !== 'dir') fail(file, 'workdir', `${shown} is not a directory`, 'point workdir at a directory (a symlink to one is fine)');
  return abs;
}

/** Read a task from YAML text; `file` names it in messages and anchors Task.file. */
export function parseTask(text: string, file: string, opts: LoadOptions = {}): Task {
  const cwd = path.resolve(opts.cwd ?? process.cwd());
  const root = parseYaml(text, file);
  const empty: YNode = { kind: 'map', entries: new Map() };
  const doc = root ?? empty;
  if (doc.kind !== 'map') {
    fail(file, '(document)', `a task must be a YAML mapping (name:, workdir:, run:, ...), got ${describe(doc)}`, 'write the task as "key: value" lines');
  }

  const ignoredKeys: string[] = [];
  for (const key of doc.entries.keys()) {
    if (USED_KEYS.includes(key)) continue;
    if (SKYPILOT_ONLY_KEYS.includes(key)) {
      ignoredKeys.push(key);
      continue;
    }
    const hint = didYouMean(key, [...USED_KEYS, ...SKYPILOT_ONLY_KEYS]);
    fail(file, key, 'unknown key', hint ?? `remove it (task keys: ${USED_KEYS.join(', ')}, resources, ...)`);
  }
  const get = (k: string): YNode | undefined => doc.entries.get(k);

  const name = readName(get('name'), file);
  const envs = finishVars(readVarSection(get('envs'), 'envs', file), opts.env, 'envs', '--env', file);
  const secrets = finishVars(readVarSection(get('secrets'), 'secrets', file), opts.secrets, 'secrets', '--secret', file);
  const numNodes = readNumNodes(get('num_nodes'), file);
  const gpusPerNode = readGpus(get('resources'));
  const setup = readCommands(get('setup'), 'setup', file);
  const run = readCommands(get('run'), 'run', file);
  // Only envs fill paths: a secret substituted into a path would end up in logs and messages.
  const workdir = readWorkdir(get('workdir'), file, cwd, envs);
  const fileMounts = readFileMounts(get('file_mounts'), { file, cwd, vars: envs, hasWorkdir: workdir !== null, ignored: ignoredKeys });

  return { file: path.resolve(cwd, expandHome(file)), name, workdir, setup, run, envs, secrets, numNodes, gpusPerNode, fileMounts, ignoredKeys };
}

/** Read and check a task YAML the way SkyPilot reads it. Throws TaskError (one line) on any problem. */
export async function loadTask(file: string, opts: LoadOptions = {}): Promise<Task> {
  const abs = path.resolve(opts.cwd ?? process.cwd(), expandHome(file));
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : code;
    throw new TaskError(`${file}: (file): cannot read the task file (${why}); check the path`);
  }
  return parseTask(text, file, opts);
}
