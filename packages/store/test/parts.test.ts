// How parts of a write become S3 multipart parts (pure planning, no server), and the promise that the package's main
// entry (what the agent bundles) reaches no SDK.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import type { ObjectPart } from '../src/object-store.js';
import { planS3Parts } from '../src/parts.js';

const MiB = 1024 * 1024;
const bytes = (size: number): ObjectPart => ({ kind: 'bytes', data: new Uint8Array(size) });
const copy = (start: number, end: number): ObjectPart => ({ kind: 'copy', key: 'old', start, end });

function summary(parts: readonly ObjectPart[]) {
  return planS3Parts(parts).map((part) => (part.kind === 'copy' ? `copy ${part.start}-${part.end}` : `send ${part.size}`));
}

describe('planS3Parts', () => {
  it('sends new bytes in parts of about 8 MiB', () => {
    expect(summary([bytes(20 * MiB)])).toEqual([`send ${8 * MiB}`, `send ${8 * MiB}`, `send ${4 * MiB}`]);
  });

  it('copies stored ranges of 5 MiB or more; a small edit borrows from the next copy to reach 5 MiB', () => {
    expect(summary([copy(0, 10 * MiB), bytes(1), copy(10 * MiB, 30 * MiB)])).toEqual([`copy 0-${10 * MiB}`, `send ${5 * MiB}`, `copy ${15 * MiB - 1}-${30 * MiB}`]);
  });

  it('reads and sends stored ranges too small to be a part', () => {
    expect(summary([bytes(MiB), copy(0, MiB), bytes(MiB)])).toEqual([`send ${3 * MiB}`]);
    expect(summary([bytes(MiB), copy(0, 6 * MiB)])).toEqual([`send ${7 * MiB}`]);
  });

  it('keeps every part but the last at 5 MiB or more', () => {
    const plan = planS3Parts([copy(0, 7 * MiB), bytes(3), copy(0, 12 * MiB), bytes(6 * MiB), copy(0, 5 * MiB), bytes(1)]);
    const sizes = plan.map((part) => (part.kind === 'copy' ? part.end - part.start : part.size));
    expect(sizes.slice(0, -1).every((size) => size >= 5 * MiB)).toBe(true);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(7 * MiB + 3 + 12 * MiB + 6 * MiB + 5 * MiB + 1);
  });
});

describe('the main entry', () => {
  it('reaches no SDK, so the agent can bundle it', () => {
    const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'src');
    const seen = new Set<string>();
    const external: string[] = [];
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const { fileName } of ts.preProcessFile(fs.readFileSync(file, 'utf8'), true, true).importedFiles) {
        if (fileName.startsWith('.')) visit(path.join(path.dirname(file), fileName.replace(/\.js$/, '.ts')));
        else if (!fileName.startsWith('node:')) external.push(fileName);
      }
    };
    visit(path.join(src, 'index.ts'));
    expect(external).toEqual([]);
    expect([...seen].map((file) => path.basename(file)).sort()).toEqual(['errors.ts', 'grant.ts', 'index.ts', 'object-store.ts', 'uri.ts']);
  });
});
