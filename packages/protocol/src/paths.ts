import { ProtocolError } from './binary.js';

/**
 * Checks a relative path received from the peer. Refused: empty, absolute, any `..` or `.` or empty component,
 * NUL bytes. Paths are latin1 byte strings with `/` separators. Crossing symlinks is checked where the path is
 * used (it depends on the filesystem), not here.
 */
export function checkRelativePath(p: string): void {
  if (p.length === 0) throw new ProtocolError('refused path: empty');
  if (p.length > 4096) throw new ProtocolError('refused path: longer than 4096 bytes');
  if (p.includes('\0')) throw new ProtocolError(`refused path with a NUL byte: ${JSON.stringify(p)}`);
  if (p.startsWith('/')) throw new ProtocolError(`refused absolute path: ${JSON.stringify(p)}`);
  for (const part of p.split('/')) {
    if (part === '' || part === '.' || part === '..') {
      throw new ProtocolError(`refused path ${JSON.stringify(p)}: empty, '.' or '..' component`);
    }
  }
}

export function isSafeRelativePath(p: string): boolean {
  try {
    checkRelativePath(p);
    return true;
  } catch {
    return false;
  }
}

export function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}
