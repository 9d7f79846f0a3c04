// The remote install-and-start script, run by a real `sh` here: the upload must land byte for byte (gzip'ed or
// raw), and `head -c` must leave the bytes after it to the agent it starts, since the protocol follows the upload
// on the same stdin.

import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { installCommand } from '../src/install.js';

const homes: string[] = [];
afterAll(() => {
  for (const h of homes) fs.rmSync(h, { recursive: true, force: true });
});

// Stands in for the agent bundle: proves it ran from the installed path and echoes the stdin it was left.
const AGENT = `process.stdout.write('AGENT ' + process.argv[2] + ' ' + __filename + '\\n'); process.stdin.pipe(process.stdout);\n`;

function runInstall(gz: boolean, withAddon: boolean, seed: number): { home: string; out: string; code: number | null; stderr: string; addon: Buffer; rest: Buffer } {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-install-'));
  homes.push(home);
  const hash = crypto.createHash('sha256').update(String(seed)).digest('hex').slice(0, 16);
  const rng = crypto.createHash('sha256').update(`addon ${seed}`).digest();
  const addon = Buffer.concat(Array.from({ length: 2000 }, (_, i) => crypto.createHash('sha256').update(rng).update(String(i)).digest()));
  const rest = Buffer.from(`protocol bytes after the upload ${seed}\n`);
  const files = [Buffer.from(AGENT), ...(withAddon ? [addon] : [])].map((b) => (gz ? zlib.gzipSync(b, { level: 1 }) : b));
  const r = spawnSync('sh', ['-c', installCommand(hash, withAddon, gz), 'skysync-install', ...files.map((f) => String(f.length))], {
    input: Buffer.concat([...files, rest]),
    env: { PATH: process.env.PATH, HOME: home },
  });
  return { home, out: r.stdout.toString('latin1'), code: r.status, stderr: r.stderr.toString(), addon, rest };
}

describe('installCommand', () => {
  for (const gz of [true, false]) {
    it(`installs ${gz ? 'gzip' : 'raw'} uploads and starts the agent with the rest of stdin`, () => {
      const seed = gz ? 1 : 2;
      const r = runInstall(gz, true, seed);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const dir = path.join(r.home, '.skysync', 'agent');
      const names = fs.readdirSync(dir).sort();
      expect(names).toHaveLength(2);
      const [cjs, node] = names.map((n) => path.join(dir, n));
      expect(fs.readFileSync(cjs!, 'utf8')).toBe(AGENT);
      expect(fs.readFileSync(node!).equals(r.addon)).toBe(true);
      expect((fs.statSync(cjs!).mode & 0o777).toString(8)).toBe('600');
      expect(r.out).toBe(`AGENT serve ${cjs}\n${r.rest.toString('latin1')}`);
    });
  }

  it('without the addon, and a cut upload fails in one line without starting anything', () => {
    const ok = runInstall(true, false, 3);
    expect(ok.code).toBe(0);
    expect(fs.readdirSync(path.join(ok.home, '.skysync', 'agent'))).toHaveLength(1);

    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-install-'));
    homes.push(home);
    const gz = zlib.gzipSync(Buffer.from(AGENT));
    const r = spawnSync('sh', ['-c', installCommand('0123456789abcdef', false, true), 'skysync-install', String(gz.length)], {
      input: gz.subarray(0, gz.length - 9),
      env: { PATH: process.env.PATH, HOME: home },
    });
    expect(r.status).toBe(97);
    expect(r.stdout.toString()).toBe('');
    expect(r.stderr.toString()).toContain('skysync: installing the agent failed');
    expect(fs.readdirSync(path.join(home, '.skysync', 'agent'))).toEqual([]);
  });
});
