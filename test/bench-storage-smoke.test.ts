// The bucket benchmark runs in miniature with the tests, so it cannot rot: every step must complete and write its
// JSON (targets are judged by the full run, not here). It needs moto and awscli (scripts/install-test-servers.sh).

import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { objectServersSkipReason } from './helpers/object-servers.js';

const skipReason = objectServersSkipReason();

describe.skipIf(!!skipReason)('bench/storage.mjs --smoke', () => {
  it('runs every step against moto and writes its results', () => {
    const r = spawnSync(process.execPath, [path.resolve('bench/storage.mjs'), '--smoke'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    expect(r.stdout).toMatch(/\| upload, nothing changed \|/);
    expect(r.stdout).toMatch(/\| node fetch, first/);
    const json = JSON.parse(fs.readFileSync(path.resolve('bench/results/storage-smoke.json'), 'utf8')) as { smoke: boolean; failures: unknown[] };
    expect(json.smoke).toBe(true);
    expect(json.failures).toEqual([]);
  }, 120_000);
});
