// A remote's permission errors said once: the path, the node, what to do.

import { describe, expect, it } from 'vitest';
import { deniedPath, explainRemoteError, isPermissionFailure } from '../src/remote-errors.js';

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
});
