// The shaped-link benchmark (bench/shaped.mjs) in miniature, over loopback so it needs no network namespace:
// it must complete, give numbers for skysync and rsync in every scenario, and leave every destination equal to
// the source minus the ignored files. Targets are not judged here (a smoke run proves nothing about speed).
//
// Needs root (it creates the skysync-bench1..4 users and runs an sshd) and OpenSSH's sshd; skipped otherwise.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BENCH = path.join(REPO, 'bench', 'shaped.mjs');
const RIG = path.join(REPO, 'bench', 'rig', 'rig.mjs');
const RESULT = path.join(REPO, 'bench', 'results', 'shaped-smoke.json');
const SCENARIOS = ['initial', 'noop', 'edit', 'insert', 'touch', 'copy', 'rename', 'pull', 'fanout'];

function skipReason(): string | null {
  if (process.platform !== 'linux') return `needs Linux, this is ${process.platform}`;
  if (process.getuid?.() !== 0) return 'needs root (creates the skysync-bench users, runs an sshd)';
  if (!fs.existsSync('/usr/sbin/sshd')) return '/usr/sbin/sshd missing (apt-get install -y openssh-server)';
  for (const t of ['rsync', 'ssh', 'ssh-keygen', 'useradd']) {
    if (spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0) return `\`${t}\` missing`;
  }
  if (!fs.existsSync(path.join(REPO, 'packages', 'cli', 'dist', 'bin.js'))) return 'skysync is not built (pnpm build)';
  return null;
}
const why = skipReason();

/** The workdir's .gitignore, written out independently of the benchmark's own code. */
function ignored(rel: string): boolean {
  const parts = rel.split('/');
  const base = parts[parts.length - 1]!;
  return parts[0] === 'data' || parts.includes('__pycache__') || base.endsWith('.log') || base.endsWith('.pyc');
}

function files(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path.join(dir, e.name), r);
      else out.push(r);
    }
  };
  walk(root, '');
  return out.sort();
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

interface ModeSummary {
  [tool: string]: { ms: number | null; wire: number | null } | undefined;
}
interface Result {
  smoke: boolean;
  machine: { date: string };
  failures: Array<{ scenario: string; error: string }>;
  scenarios: Record<string, { summary?: Record<string, ModeSummary>; error?: string; pending?: string | null }>;
  kept?: { runRoot: string; src: string; dests: Record<string, string>; fanout: Array<{ node: string; rsync: string; sky: string }> | null };
}

let kept: Result['kept'];
/** Whether this test ran the benchmark (and so owns what it left); not when another run had the rig. */
let ran = false;

describe('bench/shaped.mjs --smoke --loopback', () => {
  afterAll(() => {
    if (why || !ran) return;
    spawnSync(process.execPath, [RIG, 'down', '--wipe'], { stdio: 'ignore' });
    if (kept?.runRoot?.includes('skysync-bench')) fs.rmSync(kept.runRoot, { recursive: true, force: true });
  });

  it.skipIf(why !== null)(
    `runs every scenario for both tools and leaves the destinations equal to the source${why ? ` (skipped: ${why})` : ''}`,
    (ctx) => {
      const started = new Date();
      const r = spawnSync(process.execPath, [BENCH, '--smoke', '--loopback', '--reps', '1', '--keep'], { cwd: REPO, encoding: 'utf8', timeout: 280_000 });
      if (r.status === 75) ctx.skip(); // another run has the rig (one per machine): leave it alone
      ran = true;
      expect(r.status, `stderr:\n${r.stderr.slice(-4000)}`).toBe(0);
      expect(r.stdout).toMatch(/\| scenario \|/);
      expect(fs.existsSync(RESULT)).toBe(true);
      expect(fs.existsSync(RESULT.replace(/\.json$/, '.svg'))).toBe(true);

      const res = JSON.parse(fs.readFileSync(RESULT, 'utf8')) as Result;
      kept = res.kept;
      expect(res.smoke).toBe(true);
      expect(new Date(res.machine.date).getTime(), 'the result file is from this run').toBeGreaterThanOrEqual(started.getTime() - 1000);
      expect(res.failures).toEqual([]);

      // Numbers for both tools in every scenario and page-cache mode.
      for (const name of SCENARIOS) {
        const sc = res.scenarios[name];
        expect(sc, `scenario ${name} missing`).toBeDefined();
        expect(sc!.error, `scenario ${name} failed`).toBeUndefined();
        const modes = Object.entries(sc!.summary ?? {});
        expect(modes.length, `scenario ${name} has no summary`).toBeGreaterThan(0);
        for (const [mode, s] of modes) {
          for (const tool of ['sky', 'rsync']) {
            expect(s[tool]?.ms, `${name} ${mode} ${tool} time`).toBeGreaterThan(0);
            expect(Number.isFinite(s[tool]?.wire), `${name} ${mode} ${tool} wire bytes`).toBe(true);
          }
        }
      }

      // Every destination equals the source, ignored files absent.
      expect(kept).toBeDefined();
      const src = kept!.src;
      const all = files(src);
      const want = all.filter((f) => !ignored(f));
      expect(all.length - want.length, 'the workdir has ignored files').toBeGreaterThan(0);
      const hashes = new Map(want.map((f) => [f, sha256(path.join(src, f))]));
      const dests = [
        ...Object.entries(kept!.dests),
        ...(kept!.fanout ?? []).flatMap((n) => [
          [`rsync@${n.node}`, n.rsync] as [string, string],
          ...(res.scenarios.fanout?.pending ? [] : [[`sky@${n.node}`, n.sky] as [string, string]]),
        ]),
      ];
      expect(dests.length).toBeGreaterThanOrEqual(4);
      for (const [label, dir] of dests) {
        const got = files(dir);
        expect(got, `${label}: file list`).toEqual(want);
        for (const f of got) expect(sha256(path.join(dir, f)), `${label}: ${f}`).toBe(hashes.get(f));
      }
    },
    300_000,
  );
});
