// The benchmarks run in miniature with the tests, so they cannot rot: every step must complete and write its
// JSON (targets are judged by the full runs, not here).

import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

for (const name of ['core', 'engine']) {
  describe(`bench/${name}.mjs --smoke`, () => {
    it('runs every step and writes its results', () => {
      const r = spawnSync(process.execPath, [path.resolve(`bench/${name}.mjs`), '--smoke'], { encoding: 'utf8', timeout: 300_000 });
      expect(r.status, r.stderr.slice(-2000)).toBe(0);
      expect(r.stdout).toMatch(/\|/);
      const json = JSON.parse(fs.readFileSync(path.resolve(`bench/results/${name}-smoke.json`), 'utf8')) as { smoke: boolean };
      expect(json.smoke).toBe(true);
    }, 300_000);
  });
}
