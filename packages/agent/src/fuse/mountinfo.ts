// The kernel's mount table as this process sees it (/proc/self/mountinfo): which paths are mount points, and of
// what. Paths in it escape space, tab, newline and backslash as octal.

import fs from 'node:fs';

export interface MountEntry {
  path: string;
  fsType: string;
  source: string;
}

function decodeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

export function readMounts(): MountEntry[] {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    // id parent major:minor root mountpoint options [optional fields...] - fstype source superoptions
    const dash = line.indexOf(' - ');
    if (dash < 0) continue;
    const before = line.slice(0, dash).split(' ');
    const after = line.slice(dash + 3).split(' ');
    out.push({ path: decodeOctal(before[4] ?? ''), fsType: after[0] ?? '', source: decodeOctal(after[1] ?? '') });
  }
  return out;
}

/** The mount at exactly `path` (the last one mounted there, which is the one a reader sees), if any. */
export function mountAt(path: string): MountEntry | undefined {
  return readMounts()
    .filter((m) => m.path === path)
    .pop();
}
