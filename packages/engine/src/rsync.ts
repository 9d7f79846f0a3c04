// The fallback where the agent cannot run (no node on the remote) or with `--transport rsync`: rsync over ssh
// with SkyPilot's flags. The file list comes from skysync's own scan (`--files-from`, NUL-separated), so the
// ignore rules stay git's and names stay byte-exact. rsync cannot know what skysync placed, so it only deletes
// with --delete (an exact mirror of the listed files).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { NativeAddon } from '@skysync/chunking';
import type { DeleteMode } from '@skysync/protocol';
import type { SshTarget } from '@skysync/transport';
import type { PushStats } from './stats.js';

export const SKYPILOT_RSYNC_FLAGS = ['-Pavz', '--no-owner', '--no-group'];

export class RsyncMissingError extends Error {
  override name = 'RsyncMissingError';
}

export interface RsyncPushOptions {
  source: string;
  target: SshTarget;
  dest: string;
  deleteMode: DeleteMode;
  native: NativeAddon;
  dryRun?: boolean;
}

/**
 * rsync protects its arguments from the remote shell, so `~` is not expanded there: `~/x` becomes `x`, which
 * the remote rsync resolves against the login directory, the home.
 */
function remoteDir(dest: string): string {
  const d = dest === '~' ? '.' : dest.startsWith('~/') ? dest.slice(2) || '.' : dest;
  return d.endsWith('/') ? d : `${d}/`;
}

export async function pushWithRsync(opts: RsyncPushOptions): Promise<PushStats> {
  const t0 = performance.now();
  const which = spawn('rsync', ['--version'], { stdio: 'ignore' });
  const haveLocal = await new Promise<boolean>((resolve) => {
    which.on('error', () => resolve(false));
    which.on('close', (code) => resolve(code === 0));
  });
  if (!haveLocal) throw new RsyncMissingError('rsync is not installed here; install it (e.g. `sudo apt install rsync`) or give the remote node >= 18');
  const scanned = await opts.native.scan(opts.source, null);
  const list = scanned.tree.entries().map((e) => Buffer.from(e.path, 'latin1'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skysync-rsync-'));
  const listFile = path.join(dir, 'files');
  fs.writeFileSync(listFile, Buffer.concat(list.flatMap((p) => [p, Buffer.from([0])])));
  const ssh = ['ssh', ...(opts.target.configFile ? ['-F', opts.target.configFile] : [])].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const args = [
    ...SKYPILOT_RSYNC_FLAGS,
    '--stats',
    '--protect-args',
    '--from0',
    `--files-from=${listFile}`,
    ...(opts.deleteMode === 'mirror' ? ['--delete', '--delete-missing-args'] : []),
    ...(opts.dryRun ? ['--dry-run'] : []),
    '-e',
    ssh,
    '--rsync-path',
    `mkdir -p ${opts.dest.startsWith('~/') ? `"$HOME/${opts.dest.slice(2)}"` : `'${opts.dest}'`} && rsync`,
    `${opts.source}/`,
    `${opts.target.spec}:${remoteDir(opts.dest)}`,
  ];
  let out = '';
  let err = '';
  const child = spawn('rsync', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
  child.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  fs.rmSync(dir, { recursive: true, force: true });
  if (code !== 0 && code !== 23 && code !== 24) {
    if (/command not found|rsync: not found|No such file or directory.*rsync|protocol version mismatch/i.test(err) || code === 127 || code === 12) {
      throw new RsyncMissingError(`${opts.target.spec} has neither node >= 18 (for the skysync agent) nor rsync; install one of them there (e.g. \`sudo apt install rsync\`)`);
    }
    throw new Error(`rsync to ${opts.target.spec} failed (exit ${code}): ${err.trim().split('\n').slice(-2).join(' | ')}`);
  }
  const num = (re: RegExp): number => Number((re.exec(out)?.[1] ?? '0').replace(/,/g, ''));
  return {
    filesScanned: scanned.stats.files + scanned.stats.symlinks,
    filesChanged: num(/Number of regular files transferred: ([\d,]+)/),
    filesDeleted: num(/Number of deleted files: ([\d,]+)/),
    bytesLiteral: num(/Literal data: ([\d,]+)/),
    bytesWire: num(/Total bytes sent: ([\d,]+)/),
    bytesRelay: 0,
    bytesTotal: scanned.stats.bytes,
    chunksReused: 0,
    chunksLiteral: 0,
    durationMs: performance.now() - t0,
    scanMs: scanned.stats.durationMs,
    scan: 'full',
    scanDirs: scanned.stats.dirsListed,
    transport: 'rsync',
    generation: null,
    drift: [],
    kept: [],
    failed: code === 23 || code === 24 ? [{ path: '', error: `rsync reported partial transfer (exit ${code}): ${err.trim().split('\n').slice(-1)[0]}` }] : [],
    warnings: scanned.warnings.map((w) => w.message),
    dryRun: !!opts.dryRun,
  };
}
