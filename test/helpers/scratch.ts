import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';

/**
 * A temporary directory made before the file's tests and removed after them; `SKYSYNC_KEEP=1` keeps it, to look
 * at what a failed random run left behind. Call at the top of a test file; the result gives the path once the
 * tests run.
 */
export function scratchDir(prefix: string): () => string {
  let dir: string | undefined;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  });
  afterAll(() => {
    // Retries: a background process a test started (a watch service, a warm agent) may still be leaving.
    if (dir && process.env.SKYSYNC_KEEP !== '1') fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  });
  return () => {
    if (!dir) throw new Error('scratchDir: the directory is made only once the tests run');
    return dir;
  };
}
