import { isAlias, isMap, isPair, isScalar, isSeq, parseAllDocuments, type Document, type Scalar } from 'yaml';
import { fail, TaskError } from './errors.js';

/**
 * The YAML as a small tree that keeps, for every plain scalar, the text it was written as:
 * env values and paths are read as written, not as YAML retypes them (0755, on, 1:30, ~).
 */
export type YNode = YScalar | YMap | YSeq;
export interface YScalar {
  kind: 'scalar';
  /** Typed value as PyYAML would give it: string, bigint (integers), number, boolean, null or Date. */
  value: unknown;
  /** The value read as a string: quoted/block scalars give their value, plain ones their source text. */
  text: string;
}
export interface YMap {
  kind: 'map';
  /** Keys as written; a repeated key keeps its first position and takes the last value (as PyYAML does). */
  entries: Map<string, YNode>;
}
export interface YSeq {
  kind: 'seq';
  items: YNode[];
}

// PyYAML (YAML 1.1) float forms; the yaml package also takes "1e5" and "1.0e5", which PyYAML reads as strings.
const PY_FLOAT = [
  /^[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?$/,
  /^[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?$/,
  /^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*$/,
  /^[-+]?\.(?:inf|Inf|INF)$/,
  /^\.(?:nan|NaN|NAN)$/,
];

function scalar(node: Scalar): YScalar {
  const value: unknown = node.value;
  const plain = node.type === 'PLAIN';
  const source = typeof node.source === 'string' ? node.source : undefined;
  if (typeof value === 'string') return { kind: 'scalar', value, text: value };
  const text = plain && source !== undefined ? source : value === null || value === undefined ? '' : String(value);
  // The yaml package's YAML 1.1 reads y/n as booleans; PyYAML keeps them as strings.
  if (typeof value === 'boolean' && plain && /^[yYnN]$/.test(text)) return { kind: 'scalar', value: text, text };
  if (typeof value === 'number' && plain && !PY_FLOAT.some((re) => re.test(text))) return { kind: 'scalar', value: text, text };
  return { kind: 'scalar', value: value ?? null, text };
}

interface Walk {
  doc: Document;
  file: string;
  /** Nodes left to visit: aliases re-expand their target, so a small file could otherwise explode. */
  budget: number;
}

function convert(node: unknown, w: Walk, at: string, depth: number): YNode {
  if (depth > 64 || --w.budget < 0) fail(w.file, at || '(document)', 'the YAML nests or repeats too much (an alias bomb?)', 'simplify the anchors and aliases');
  if (isAlias(node)) return convert(node.resolve(w.doc), w, at, depth + 1);
  if (isScalar(node)) return scalar(node);
  if (isSeq(node)) return { kind: 'seq', items: node.items.map((n, i) => convert(n, w, `${at}[${i}]`, depth + 1)) };
  if (isMap(node)) {
    const merged = new Map<string, YNode>();
    const own = new Map<string, YNode>();
    for (const pair of node.items) {
      if (!isPair(pair)) continue;
      const k = pair.key;
      // "<<: *anchor" merges; keys written in the mapping itself win over merged ones.
      if (isScalar(k) && typeof k.value === 'symbol') {
        const v = convert(pair.value, w, at, depth + 1);
        const sources = v.kind === 'seq' ? [...v.items].reverse() : [v];
        for (const s of sources) {
          if (s.kind !== 'map') fail(w.file, `${at}.<<`, 'a merge key (<<) must refer to a mapping', 'merge an anchored mapping (<<: *name)');
          for (const [mk, mv] of s.entries) merged.set(mk, mv);
        }
        continue;
      }
      let key: string;
      if (k === null || k === undefined) key = '';
      else if (isScalar(k)) key = scalar(k).text;
      else if (isAlias(k)) {
        const r = convert(k, w, at, depth + 1);
        if (r.kind !== 'scalar') fail(w.file, at || '(document)', 'a key is a mapping or a list', 'use plain text keys');
        key = r.text;
      } else fail(w.file, at || '(document)', 'a key is a mapping or a list', 'use plain text keys');
      const childAt = at === '' ? key : `${at}.${key}`;
      own.set(key, convert(pair.value, w, childAt, depth + 1));
    }
    for (const [k, v] of own) merged.set(k, v);
    return { kind: 'map', entries: merged };
  }
  // A missing value ("key:" with nothing after it).
  return { kind: 'scalar', value: null, text: '' };
}

/** Parse the task text; null when the file holds no document at all (SkyPilot reads that as an empty task). */
export function parseYaml(text: string, file: string): YNode | null {
  // YAML 1.1 and no duplicate-key error: SkyPilot reads task files with PyYAML's safe_load.
  const docs = parseAllDocuments(text, { version: '1.1', uniqueKeys: false, intAsBigInt: true });
  if (!Array.isArray(docs) || docs.length === 0) return null;
  for (const doc of docs) {
    const err = doc.errors[0];
    if (err) {
      const pos = err.linePos?.[0];
      const where = pos ? `${file}:${pos.line}:${pos.col}` : file;
      const reason = (err.message.split('\n')[0] ?? err.message).replace(/ at line \d+, column \d+:?$/, '');
      throw new TaskError(`${where}: ${reason}; fix the YAML syntax at that position`);
    }
  }
  if (docs.length > 1) {
    fail(file, '(document)', `holds ${docs.length} YAML documents separated by "---"`, 'keep one task per file (skysync does not run pipelines)');
  }
  const doc = docs[0] as Document;
  if (doc.contents === null || doc.contents === undefined) return null;
  return convert(doc.contents, { doc, file, budget: 100_000 }, '', 0);
}

export function describe(node: YNode): string {
  if (node.kind === 'map') return 'a mapping';
  if (node.kind === 'seq') return 'a list';
  const v = node.value;
  if (v === null) return 'nothing (null)';
  if (typeof v === 'boolean') return `a boolean (${node.text})`;
  if (typeof v === 'bigint' || typeof v === 'number') return `a number (${node.text})`;
  if (v instanceof Date) return `a date (${node.text})`;
  return `a string (${JSON.stringify(node.text)})`;
}
