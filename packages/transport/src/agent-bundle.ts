// The agent as shipped to a remote: the bundle (and the addon) this installation built, named by content hash.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { agentBundlePath } from './local.js';

/** The agent bundle and its content hash: the remote file name, so versions never collide. */
export function agentBundle(): { file: string; hash: string } {
  const file = agentBundlePath();
  const meta = path.join(path.dirname(file), 'agent.json');
  const hash = (JSON.parse(fs.readFileSync(meta, 'utf8')) as { hash: string }).hash;
  return { file, hash };
}

const uploads = new Map<string, Promise<Buffer>>();

/** The agent's files as uploaded: gzip'ed (fast level: the link is the cost) once per process, for every node. */
export function uploadFiles(bundle: string, addon: string | null, gz: boolean): Promise<Buffer[]> {
  const one = (f: string): Promise<Buffer> => {
    const key = `${gz ? 'gz' : 'raw'}:${f}`;
    let p = uploads.get(key);
    if (!p) {
      p = fsp.readFile(f).then((b) => (gz ? promisify(zlib.gzip)(b, { level: 1 }) : b));
      uploads.set(key, p);
    }
    return p;
  };
  return Promise.all([one(bundle), ...(addon ? [one(addon)] : [])]);
}
