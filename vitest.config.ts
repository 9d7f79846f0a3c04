import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Native addons in worker threads can crash the process: every project runs in forked processes.
// Commands leave no warm agents or connections behind unless a test asks for them (each would otherwise outlive
// the run by minutes, one per temporary target).
const common = { pool: 'forks' as const, testTimeout: 120_000, hookTimeout: 120_000, env: { SKYSYNC_CONTROL_PERSIST: '0' } };

// One project per package that has a test folder, named after the folder (`npx vitest run --project apply`), and
// `e2e` for the end-to-end tests in test/.
const root = path.dirname(fileURLToPath(import.meta.url));
const packagesWithTests = fs
  .readdirSync(path.join(root, 'packages'), { withFileTypes: true })
  .filter((entry) => entry.isDirectory() && fs.existsSync(path.join(root, 'packages', entry.name, 'test')))
  .map((entry) => entry.name)
  .sort();

export default defineConfig({
  test: {
    projects: [
      ...packagesWithTests.map((name) => ({ test: { ...common, name, include: [`packages/${name}/test/**/*.test.ts`] } })),
      { test: { ...common, name: 'e2e', include: ['test/**/*.test.ts'] } },
    ],
  },
});
