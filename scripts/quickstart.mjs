#!/usr/bin/env node
// The README's first command: set everything up, then push the bundled example workdir to the embedded local
// target (a directory that plays the remote's home), edit one file, and push again.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setup } from './setup.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
setup();

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-quickstart-'));
const workdir = path.join(work, 'workdir');
const home = path.join(work, 'node');
fs.cpSync(path.join(root, 'examples', 'workdir'), workdir, { recursive: true });
// Junk that the example's .gitignore keeps out (made here: git would not commit it either).
fs.mkdirSync(path.join(workdir, 'src', 'model', '__pycache__'), { recursive: true });
fs.writeFileSync(path.join(workdir, 'src', 'model', '__pycache__', 'train.cpython-311.pyc'), 'bytecode');
fs.writeFileSync(path.join(workdir, 'data', 'shard-000.bin'), Buffer.alloc(8 << 20, 7));
const env = { ...process.env, SKYSYNC_STATE_DIR: path.join(work, 'state') };
const cli = path.join(root, 'packages', 'cli', 'dist', 'bin.js');

function push(title) {
  process.stdout.write(`\n== ${title}\n$ skysync push local:${home} --workdir ${workdir}\n`);
  const r = spawnSync(process.execPath, [cli, 'push', `local:${home}`, '--workdir', workdir], { env, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

push('first push: everything moves');
push('second push: nothing changed, nothing moves');
fs.appendFileSync(path.join(workdir, 'src', 'model', 'train.py'), '\nprint("one more line")\n');
fs.rmSync(path.join(workdir, 'configs', 'old.yaml'));
push('after editing train.py and deleting configs/old.yaml');
process.stdout.write(`\nThe "remote" is ${home}/sky_workdir:\n`);
spawnSync('find', [path.join(home, 'sky_workdir'), '-maxdepth', '3'], { stdio: 'inherit' });
// The pushes left a warm agent behind for the next push, as they do for a user;
// this demo's temporary target has no next push.
process.stdout.write(`\n$ skysync disconnect local:${home}\n`);
spawnSync(process.execPath, [cli, 'disconnect', `local:${home}`], { env, stdio: 'inherit' });
