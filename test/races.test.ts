// ISSUE22 suite, races, through the real CLI (packages/apply/test/race.test.ts races the receiver alone, on one
// directory): while pushes apply, a job on the node swaps directories of the destination for symlinks that point
// outside it (to a sentinel directory elsewhere, or up to the home that holds the destination), renames files and
// removes files. Zero writes outside: the sentinel stays byte-identical and no new name appears beside the
// destination; zero torn files (each file holds a content some file of the source had); no push hangs; once the
// job stops, the next quiet push leaves an exact mirror with no temp file.
//
// Seeded: SKYSYNC_SEED replays a run (the seed is printed on failure). SKYSYNC_RACE_PUSHES sets how many pushes
// race the job (default 12).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { type Outcome, runCli, skipTemps, tempPaths, tornFiles } from './helpers/faults.js';
import { Rng, seedFromEnv } from './helpers/random.js';
import { scratchDir } from './helpers/scratch.js';
import { diffItems, type Item, listTree, walk } from './helpers/tree.js';

const PUSHES = Number(process.env.SKYSYNC_RACE_PUSHES || 12);
const DEADLINE_MS = 90_000;
const work = scratchDir('skysync-races-');

// The job: a loop of swaps (dir -> dir.racer; symlink in its place; a moment; and back), renames and removals of
// files, yielding to the event loop between bursts so it can report its counts when told to stop (SIGTERM).
const JOB = `
const fs = require('fs');
const path = require('path');
const [dest, sentinel, seedText, listFile] = process.argv.slice(1);
const { dirs, files } = JSON.parse(fs.readFileSync(listFile, 'utf8'));
let s = Number(seedText) >>> 0;
const rnd = (n) => { s = (Math.imul(s ^ (s >>> 15), 2246822507) + 0x9e3779b9) >>> 0; return s % n; };
const counts = { swaps: 0, renames: 0, removals: 0, failed: 0 };
process.on('SIGTERM', () => { process.stdout.write(JSON.stringify(counts) + '\\n', () => process.exit(0)); });
function swap() {
  const rel = dirs[rnd(dirs.length)];
  const d = path.join(dest, rel), away = d + '.racer';
  const target = rnd(2) ? sentinel : '../'.repeat(rel.split('/').length - 1) + '..'; // the home
  fs.renameSync(d, away);
  try {
    fs.symlinkSync(target, d);
    for (let i = rnd(2000); i > 0; i--);
    fs.unlinkSync(d);
  } finally {
    fs.renameSync(away, d);
  }
  counts.swaps++;
}
function burst() {
  for (let i = 0; i < 20; i++) {
    try {
      const roll = rnd(10);
      if (roll < 7) swap();
      else if (roll < 9) { const f = path.join(dest, files[rnd(files.length)]); fs.renameSync(f, f + '.moved'); counts.renames++; }
      else { fs.unlinkSync(path.join(dest, files[rnd(files.length)])); counts.removals++; }
    } catch { counts.failed++; }
  }
  setImmediate(burst);
}
process.stdout.write('go\\n');
burst();`;

interface JobCounts {
  swaps: number;
  renames: number;
  removals: number;
  failed: number;
}

/** Starts the job on the destination's current dirs and files; stop() ends it and gives what it did. */
async function startJob(dest: string, sentinel: string, seed: number): Promise<{ stop: () => Promise<JobCounts> }> {
  const listFile = path.join(work(), 'job-list.json');
  const { dirs, files } = listTree(dest);
  fs.writeFileSync(listFile, JSON.stringify({ dirs: dirs.filter((d) => !skipTemps(d)), files: files.filter((f) => !skipTemps(f)) }));
  const job = spawn(process.execPath, ['-e', JOB, dest, sentinel, String(seed), listFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  job.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((resolve) => job.stdout!.once('data', () => resolve()));
  const exited = new Promise<void>((resolve) => job.on('exit', () => resolve()));
  return {
    stop: async () => {
      job.kill('SIGTERM');
      await exited;
      const line = out.split('\n').find((l) => l.startsWith('{'));
      return line ? (JSON.parse(line) as JobCounts) : { swaps: 0, renames: 0, removals: 0, failed: 0 };
    },
  };
}

function writeTree(src: string, rng: Rng, round: number): void {
  for (let i = 0; i < 1200; i++) {
    if (round > 0 && !rng.chance(0.4)) continue;
    const f = path.join(src, `d${i % 8}`, `e${i % 3}`, `f${i}.txt`);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, rng.bytes(rng.int(6000)));
  }
  for (let k = 0; k < 2; k++) if (round === 0 || rng.chance(0.5)) fs.writeFileSync(path.join(src, `d${k}`, `e0`, `big${k}.bin`), rng.bytes((2 << 20) + rng.int(1 << 20)));
}

/** Names beside the destination in its home, the agent's own state directory excepted. */
function besideDest(home: string): string[] {
  return listTree(home)
    .files.concat(listTree(home).dirs)
    .filter((p) => !p.startsWith('sky_workdir') && !p.startsWith('.skysync'))
    .sort();
}

describe('a job swapping directories for symlinks, renaming and removing files while pushes apply', () => {
  it(`never writes outside the destination, tears no file, and the next quiet push converges (${PUSHES} pushes, seeded)`, async () => {
    const seed = seedFromEnv();
    const rng = new Rng(seed);
    const src = path.join(work(), 'src');
    const home = path.join(work(), 'home');
    const dest = path.join(home, 'sky_workdir');
    const sentinel = path.join(work(), 'outside', 'sentinel');
    fs.mkdirSync(sentinel, { recursive: true });
    for (let i = 0; i < 5; i++) fs.writeFileSync(path.join(sentinel, `keep${i}`), rng.bytes(100));
    const env = { SKYSYNC_STATE_DIR: path.join(work(), 'state'), SKYSYNC_CONTROL_PERSIST: '0', SKYSYNC_WATCH_PERSIST: '0' };
    const push = (mirror: boolean) => runCli(['push', `local:${home}`, '-w', src, ...(mirror ? ['--delete'] : [])], env, DEADLINE_MS);
    const ctx = (what: string, r?: Outcome): string => `seed ${seed} (SKYSYNC_SEED=${seed} replays it): ${what}` + (r ? `: exit ${r.code ?? r.signal}, ${r.stderr.trim()}` : '');
    const versions = new Set<string>();
    const remember = (tree: Map<string, Item>): Map<string, Item> => {
      for (const item of tree.values()) if (item.sha) versions.add(item.sha);
      return tree;
    };

    writeTree(src, rng, 0);
    remember(walk(src));
    expect((await push(false).done).code, ctx('first push')).toBe(0);
    const sentinelBefore = walk(sentinel);
    const besideBefore = besideDest(home);
    const total: JobCounts = { swaps: 0, renames: 0, removals: 0, failed: 0 };
    const exits = new Map<string, number>();
    try {
      for (let round = 1; round <= PUSHES; round++) {
        writeTree(src, rng, round);
        const expected = remember(walk(src));
        const job = await startJob(dest, sentinel, (seed + round) >>> 0);
        const r = await push(rng.chance(0.5)).done;
        const did = await job.stop();
        for (const k of Object.keys(total) as Array<keyof JobCounts>) total[k] += did[k];
        const code = String(r.code ?? r.signal);
        exits.set(code, (exits.get(code) ?? 0) + 1);
        const what = `round ${round} (job: ${JSON.stringify(did)})`;
        expect(r.timedOut, ctx(`${what}: the push hung`, r)).toBe(false);
        expect(walk(sentinel), ctx(`${what}: the sentinel outside changed`, r)).toEqual(sentinelBefore);
        expect(besideDest(home), ctx(`${what}: new names beside the destination`, r)).toEqual(besideBefore);
        expect(
          tornFiles(walk(dest, { skip: skipTemps }), () => versions),
          ctx(`${what}: torn files`, r),
        ).toEqual([]);

        const quiet = await push(true).done;
        expect(quiet.timedOut, ctx(`${what}: the quiet push hung`, quiet)).toBe(false);
        expect(quiet.code, ctx(`${what}: the quiet push`, quiet)).toBe(0);
        expect(tempPaths(dest), ctx(`${what}: temp files after the quiet push`, quiet)).toEqual([]);
        expect(diffItems(expected, walk(dest), { mtime: false }), ctx(`${what}: mirror after the quiet push`, quiet)).toEqual([]);
      }
    } finally {
      console.log(
        `races: ${PUSHES} pushes raced a job that made ${total.swaps} dir/symlink swaps, ${total.renames} renames and ${total.removals} removals ` +
          `(${total.failed} attempts failed); racing pushes exited ${JSON.stringify(Object.fromEntries(exits))} (seed ${seed})`,
      );
    }
  }, 600_000);
});
