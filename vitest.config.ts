import { defineConfig } from 'vitest/config';

// Native addons in worker threads can crash the process: every project runs in forked processes.
// Commands leave no warm agents or connections behind unless a test asks for them (each would otherwise outlive
// the run by minutes, one per temporary target).
const common = { pool: 'forks' as const, testTimeout: 120_000, hookTimeout: 120_000, env: { SKYSYNC_CONTROL_PERSIST: '0' } };

export default defineConfig({
  test: {
    projects: [
      { test: { ...common, name: 'protocol', include: ['packages/protocol/test/**/*.test.ts'] } },
      { test: { ...common, name: 'chunking', include: ['packages/chunking/test/**/*.test.ts'] } },
      { test: { ...common, name: 'engine', include: ['packages/engine/test/**/*.test.ts'] } },
      { test: { ...common, name: 'agent', include: ['packages/agent/test/**/*.test.ts'] } },
      { test: { ...common, name: 'apply', include: ['packages/apply/test/**/*.test.ts'] } },
      { test: { ...common, name: 'task', include: ['packages/task/test/**/*.test.ts'] } },
      { test: { ...common, name: 'cli', include: ['packages/cli/test/**/*.test.ts'] } },
      { test: { ...common, name: 'transport', include: ['packages/transport/test/**/*.test.ts'] } },
      { test: { ...common, name: 'e2e', include: ['test/**/*.test.ts'] } },
    ],
  },
});
