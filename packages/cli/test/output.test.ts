// The closing summary and the notes said once per task.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bucketLine, compactLine, plural, speedup, summaryLines, type Summarized } from '../src/output.js';
import { sayOnce } from '../src/notes.js';

const base: Summarized = {
  filesScanned: 10,
  filesChanged: 10,
  filesDeleted: 0,
  bytesLiteral: 99 << 20,
  bytesWire: 99 << 20,
  chunksReused: 0,
  durationMs: 1234,
  transport: 'local',
  bytesTotal: 99 << 20,
};

describe('summary', () => {
  it('a first push shows no speedup; an incremental one that reused content does', () => {
    expect(speedup(base)).toBeNull();
    expect(summaryLines(base).join('\n')).not.toMatch(/speedup/i);
    const small = { ...base, filesChanged: 1, chunksReused: 400, bytesLiteral: 1 << 20, bytesWire: 1 << 20 };
    expect(speedup(small)).toBe('99.0x');
    expect(summaryLines(small)).toContain('Speedup: 99.0x over sending everything');
    expect(speedup({ ...small, bytesRelay: 1 << 20 } as Summarized)).toBeNull();
    // Nothing changed: a tiny wire over a big tree is no speedup.
    expect(speedup({ ...base, filesChanged: 0, chunksReused: 0, bytesLiteral: 0, bytesWire: 700 })).toBeNull();
  });

  it('says a dry run is one', () => {
    const lines = summaryLines({ ...base, dryRun: true, bytesWire: 300 });
    expect(lines[0]).toBe('Dry run: nothing was changed.');
    expect(lines).toContain('Number of files that would be transferred: 10');
    expect(compactLine('workdir', { ...base, dryRun: true, filesChanged: 1 })).toMatch(/^workdir: dry run, 1 file would change,/);
  });

  it('1 file, N files, and a failed file counted as failed, not changed', () => {
    expect(plural(1, 'file')).toBe('1 file');
    expect(plural(2, 'file')).toBe('2 files');
    expect(plural(0, 'entry', 'entries')).toBe('0 entries');
    const s = { ...base, filesChanged: 3, failed: [{ path: 'x' }] };
    expect(summaryLines(s)).toEqual(expect.arrayContaining(['Number of files transferred: 2', 'Number of files failed: 1']));
    expect(compactLine('n1: workdir', s)).toMatch(/^n1: workdir: 2 files changed, 1 failed, 0 deleted, /);
    expect(compactLine('workdir', { ...base, filesChanged: 1 })).toMatch(/^workdir: 1 file changed, /);
  });

  it('every summary line fits 80 columns for ordinary sizes', () => {
    for (const l of summaryLines({ ...base, filesChanged: 1, chunksReused: 9, bytesWire: 1000, failed: [] })) expect(l.length).toBeLessThanOrEqual(80);
  });
});

describe('bucket mounts', () => {
  const bucket = { source: 's3://b/data', objectsListed: 3004, fetched: 2, skipped: 2998, bytesFetched: 3 << 20, deleted: 1, refused: 0, failed: 0, stale: 0 };
  it('say what the node fetched from the store, not literal or wire bytes (none crossed this link)', () => {
    expect(bucketLine('file_mounts.~/data -> ~/data', { ...base, transport: 'bucket' }, bucket)).toBe(
      'file_mounts.~/data -> ~/data: 3004 objects listed, 2 fetched (3.00 MiB from s3://b/data), 2998 unchanged, 1 deleted (1.23 s)',
    );
    expect(bucketLine('m', { ...base, dryRun: true }, { ...bucket, failed: 1, refused: 2, stale: 3 })).toBe(
      'm: dry run, 3004 objects listed, 2 would be fetched (3.00 MiB from s3://b/data), 2998 unchanged, 1 deleted, 2 refused, 3 left (--no-delete) (1.23 s)',
    );
    expect(bucketLine('m', base, { ...bucket, objectsListed: 1, failed: 1 })).toMatch(/^m: 1 object listed, .*, 1 failed \(/);
  });
});

describe('notes said once per task', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-notes-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('once for a task file and content, again when it changes, never when quiet', () => {
    const task = path.join(dir, 'task.yaml');
    fs.writeFileSync(task, 'resources:\n  accelerators: A100\nrun: echo hi\n');
    const said: string[] = [];
    const state = path.join(dir, 'state');
    sayOnce(task, 'ignored-keys', 'note: resources', (l) => said.push(l), true, state);
    sayOnce(task, 'ignored-keys', 'note: resources', (l) => said.push(l), false, state);
    sayOnce(task, 'ignored-keys', 'note: resources', (l) => said.push(l), false, state);
    sayOnce(task, 'exec-skips-mounts', 'note: mounts', (l) => said.push(l), false, state);
    expect(said).toEqual(['note: resources', 'note: mounts']);
    fs.appendFileSync(task, '# edited\n');
    sayOnce(task, 'ignored-keys', 'note: resources', (l) => said.push(l), false, state);
    expect(said).toEqual(['note: resources', 'note: mounts', 'note: resources']);
  });
});
