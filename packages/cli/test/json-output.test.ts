// The --json object stays splittable from a job's output.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { emitJson, StdoutTracker } from '../src/json-output.js';

function sink(): { out: NodeJS.WritableStream; text: () => string } {
  let text = '';
  const out = {
    write: (d: string | Buffer) => {
      text += String(d);
      return true;
    },
  } as unknown as NodeJS.WritableStream;
  return { out, text: () => text };
}

describe('--json and --json-file', () => {
  it('puts the JSON on a line of its own after output that did not end its line', () => {
    const s = sink();
    const tracker = new StdoutTracker(s.out);
    tracker.stream.write('no newline at the end');
    emitJson({ exitCode: 0 }, { json: true }, tracker, s.out);
    const lines = s.text().split('\n');
    expect(lines).toEqual(['no newline at the end', '{"exitCode":0}', '']);
  });

  it('adds no empty line after output that ended its line', () => {
    const s = sink();
    const tracker = new StdoutTracker(s.out);
    tracker.stream.write('done\n');
    emitJson({ a: 1 }, { json: true }, tracker, s.out);
    expect(s.text()).toBe('done\n{"a":1}\n');
  });

  it('writes the object to --json-file and nothing to stdout without --json', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-json-')), 'r.json');
    const s = sink();
    emitJson({ a: 1 }, { jsonFile: file }, undefined, s.out);
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual({ a: 1 });
    expect(s.text()).toBe('');
  });
});
