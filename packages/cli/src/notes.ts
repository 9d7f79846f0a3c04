// Notes that would repeat on every run of the same task (a key it ignores, what exec skips) are said once per
// task: the first time for a task file with this content, and again only after the file changes.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { stateRoot } from '@skysync/transport';

function notesFile(root: string): string {
  return path.join(root, 'notes-said.json');
}

function read(root: string): Record<string, true> {
  try {
    const v = JSON.parse(fs.readFileSync(notesFile(root), 'utf8'));
    return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
  } catch {
    return {};
  }
}

/** The key of a note about a task file: its path, its content and which note. */
export function noteKey(taskFile: string, content: string | Buffer, note: string): string {
  const h = crypto.createHash('sha256').update(path.resolve(taskFile)).update('\0').update(content).update('\0').update(note);
  return h.digest('hex').slice(0, 32);
}

/**
 * Says `message` unless it was said for this task file and content already (or `quiet`). Remembering is best
 * effort: a state directory that cannot be written means the note is said again next time.
 */
export function sayOnce(taskFile: string, note: string, message: string, print: (l: string) => void, quiet?: boolean, root = stateRoot()): void {
  if (quiet) return;
  let content: Buffer;
  try {
    content = fs.readFileSync(taskFile);
  } catch {
    print(message);
    return;
  }
  const key = noteKey(taskFile, content, note);
  const said = read(root);
  if (said[key]) return;
  print(message);
  said[key] = true;
  // Bounded: the oldest keys go first once there are many.
  const keys = Object.keys(said);
  const kept = Object.fromEntries(keys.slice(Math.max(0, keys.length - 500)).map((k) => [k, true]));
  try {
    fs.mkdirSync(root, { recursive: true });
    const tmp = `${notesFile(root)}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(kept));
    fs.renameSync(tmp, notesFile(root));
  } catch {
    // Said again next time.
  }
}
