import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { TaskError } from '../src/index.js';

export const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');

export function fixture(name: string): string {
  return path.join(FIXTURES, name);
}

/**
 * A throwaway "current directory" holding the local files the fixtures point at, and a fake
 * $HOME for "~/..." paths. Fixtures stay free of machine-specific paths.
 */
export interface Sandbox {
  root: string;
  home: string;
  cleanup(): void;
}

export function makeSandbox(): Sandbox {
  const root = mkdtempSync(path.join(tmpdir(), 'skysync-task-'));
  const home = path.join(root, 'home');
  const dirs = ['project', 'data', 'ckpt', 'home/.ssh', 'home/local/datasets', 'home/local/dir', 'home/tmp-workdir', 'home/hf'];
  for (const d of dirs) mkdirSync(path.join(root, d), { recursive: true });
  const files: Record<string, string> = {
    'project/train.py': 'print("train")\n',
    'project/requirements.txt': 'numpy\n',
    'data/a.txt': 'a\n',
    'file.txt': 'notes\n',
    'home/.vimrc': 'set nu\n',
    'home/.ssh/id_rsa.pub': 'ssh-ed25519 AAAA test\n',
    'home/local/datasets/part-0': 'x\n',
    'home/local/path': 'a local file\n',
  };
  for (const [f, body] of Object.entries(files)) writeFileSync(path.join(root, f), body);
  symlinkSync(path.join(root, 'data'), path.join(root, 'data-link'));
  symlinkSync(path.join(root, 'project'), path.join(root, 'project-link'));
  symlinkSync(path.join(root, 'nowhere'), path.join(root, 'dangling'));
  const savedHome = process.env.HOME;
  process.env.HOME = home;
  return {
    root,
    home,
    cleanup() {
      if (savedHome === undefined) delete process.env.HOME;
      else process.env.HOME = savedHome;
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** Run fn, expect a one-line TaskError naming the file and the key, and containing each fix fragment. */
export function expectTaskError(fn: () => unknown, file: string, key: string, ...fragments: string[]): string {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected a TaskError for ${key}`).toBeInstanceOf(TaskError);
  const message = (caught as TaskError).message;
  expect(message).not.toMatch(/[\r\n]/);
  expect(message.startsWith(`${file}: ${key}: `), `message ${JSON.stringify(message)} should start with "${file}: ${key}: "`).toBe(true);
  // "<what is wrong>; <what to do>"
  expect(message.slice(file.length + key.length + 4)).toMatch(/.; ./);
  for (const f of fragments) expect(message).toContain(f);
  return message;
}

export async function expectTaskErrorAsync(p: Promise<unknown>): Promise<string> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(TaskError);
  const message = (e as TaskError).message;
  expect(message).not.toMatch(/[\r\n]/);
  return message;
}
