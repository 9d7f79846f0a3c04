import { statSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';

/** Where the workdir lands on every node; also the base of relative file_mounts destinations. */
export const REMOTE_WORKDIR = '~/sky_workdir';

/** "~" and "~/x" expand against $HOME, like Python's os.path.expanduser ("~user" is left alone). */
export function expandHome(p: string): string {
  if (p !== '~' && !p.startsWith('~/')) return p;
  const home = process.env.HOME || homedir();
  return p === '~' ? home : path.join(home, p.slice(2));
}

export function resolveLocal(p: string, cwd: string): string {
  return path.resolve(cwd, expandHome(p));
}

export type StatResult = { kind: 'file' | 'dir' } | { kind: 'missing' } | { kind: 'error'; code: string };

/** stat that follows symlinks: a link to a directory is a directory, a dangling link is missing. */
export function statFollow(p: string): StatResult {
  try {
    const st = statSync(p, { throwIfNoEntry: false });
    if (st === undefined) return { kind: 'missing' };
    return { kind: st.isDirectory() ? 'dir' : 'file' };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'unknown error';
    if (code === 'ENOTDIR') return { kind: 'missing' };
    return { kind: 'error', code };
  }
}

/** Remote location of a file_mounts destination: relative ones go under ~/sky_workdir. */
export function remoteFor(dest: string): string {
  if (dest === '~' || dest.startsWith('~/') || dest.startsWith('/')) return dest;
  return path.posix.join(REMOTE_WORKDIR, dest);
}

/**
 * How a remote path is written: under home and /tmp directly; anywhere else needs sudo
 * (SkyPilot writes to ~/.sky/file_mounts/<path> and symlinks it into place).
 */
export function placement(remote: string): 'home' | 'tmp' | 'elsewhere' {
  if (remote === '~' || remote.startsWith('~/')) {
    // "~/../x" leaves home, so it is not a home path whatever its prefix says.
    const rest = path.posix.normalize(remote.slice(2) || '.');
    return rest === '..' || rest.startsWith('../') ? 'elsewhere' : 'home';
  }
  if (remote.startsWith('/')) {
    const n = path.posix.normalize(remote);
    return n === '/tmp' || n.startsWith('/tmp/') ? 'tmp' : 'elsewhere';
  }
  return 'elsewhere';
}

/** A URL with a host part ("scheme://host..."): SkyPilot treats these as cloud URIs, never as local paths. */
export function uriParts(s: string): { scheme: string; host: string; path: string } | null {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]+)([^?#]*)/.exec(s);
  if (!m) return null;
  return { scheme: (m[1] ?? '').toLowerCase(), host: m[2] ?? '', path: m[3] ?? '' };
}

/** The scheme as Python's urlsplit finds it ("foo:bar" has scheme "foo"); '' for a plain path. */
export function urlScheme(s: string): string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(s);
  return m ? (m[1] ?? '').toLowerCase() : '';
}

/** Azure Blob containers are the only https:// sources SkyPilot can fetch. */
export function isAzureBlobUrl(s: string): boolean {
  return /^https:\/\/[a-z0-9]+\.blob\.core\.windows\.net\/[^/]+/i.test(s);
}
