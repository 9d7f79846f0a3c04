// A remote's permission errors said once: the path, the node, what to do.

import { describe, expect, it } from 'vitest';
import { deniedPath, explainRemoteError, isPermissionFailure, refusalReason, roomAdvice, roomReason } from '../src/remote-errors.js';

describe('permission errors on the remote', () => {
  it("names the agent's state directory and says how to give it back", () => {
    const raw =
      "could not install the skysync agent on dev: the remote shell exited before skysync could start (mkdir: cannot create directory '/home/u/.skysync/agent': Permission denied | skysync: installing the agent failed)";
    const said = explainRemoteError('dev', raw);
    expect(said).toBe(
      `dev: permission denied on /home/u/.skysync/agent; skysync keeps its agent and state in /home/u/.skysync: make it the SSH user's, e.g. ssh dev 'sudo chown -R "$(id -un)" /home/u/.skysync'`,
    );
  });

  it('names a destination once, without the doubled errno text', () => {
    const raw = "workdir: push to dev: EACCES: permission denied, mkdir '/opt/x' (agent said: skysync-agent: EACCES: permission denied, mkdir '/opt/x')";
    const said = explainRemoteError('dev', raw);
    expect(said).toMatch(/^dev: permission denied on \/opt\/x; the SSH user may not write there: push under its home instead/);
    expect(said).not.toContain('EACCES');
    expect(said.split('/opt/x').length - 1).toBe(3);
  });

  it('leaves other errors alone and tells per-file permission failures apart', () => {
    expect(explainRemoteError('dev', 'connection reset')).toBe('connection reset');
    expect(deniedPath("EROFS: read-only file system, open '/mnt/a'")).toBe('/mnt/a');
    expect(isPermissionFailure('cannot create temp file: Permission denied (os error 13)')).toBe(true);
    expect(isPermissionFailure('No space left on device (os error 28)')).toBe(false);
  });

  it('says a read-only filesystem as what it is, with its own fix (it was reported as permission denied)', () => {
    const said = explainRemoteError('dev', "workdir: push to dev: EROFS: read-only file system, open '/mnt/ro/a'");
    expect(said).toMatch(/^dev: read-only file system on \/mnt\/ro\/a; the filesystem there is mounted read-only/);
    expect(refusalReason('open: Read-only file system (os error 30)')).toBe('read-only file system');
    expect(refusalReason('cannot create temp file: Permission denied (os error 13)')).toBe('permission denied');
  });

  it('tells a full disk and a full quota from other failures, in both the native and the Node spelling', () => {
    expect(roomReason('write: No space left on device (os error 28)')).toBe('no space left on device');
    expect(roomReason('ENOSPC: no space left on device, write')).toBe('no space left on device');
    expect(roomReason('EDQUOT: disk quota exceeded, write')).toBe('disk quota exceeded');
    expect(roomReason('cannot create temp file: Permission denied (os error 13)')).toBeNull();
    expect(roomReason('write: os error 280')).toBeNull();
    expect(roomAdvice('dev', '~/sky_workdir', 'no space left on device')).toMatch(/^free space there \(ssh dev df -h ~\/sky_workdir\)/);
    expect(roomAdvice('local:/tmp/n', '/tmp/n/w', 'no space left on device')).toMatch(/^free space there \(df -h \/tmp\/n\/w\)/);
  });
});
