// The --json object where a script can find it: the very last line of stdout, on a line of its own even when
// a job's output did not end its last line, and/or a file of its own (--json-file) so stdout is the job's alone.

import fs from 'node:fs';
import { Writable } from 'node:stream';

/** stdout as the jobs write to it, remembering whether what was written last ended a line. */
export class StdoutTracker {
  atLineStart = true;
  readonly stream: Writable;

  constructor(out: NodeJS.WritableStream = process.stdout) {
    this.stream = new Writable({
      write: (chunk: Buffer | string, _encoding, done) => {
        if (chunk.length) this.atLineStart = String(chunk.slice(-1)) === '\n';
        out.write(chunk);
        // Done at once: nothing waits in this stream, so the JSON cannot overtake a job's last bytes.
        done();
      },
    });
  }
}

export interface JsonDestination {
  json?: boolean;
  jsonFile?: string;
}

/** Writes the object to --json-file, and to stdout (its last line) with --json. */
export function emitJson(value: unknown, to: JsonDestination, stdout?: StdoutTracker, out: NodeJS.WritableStream = process.stdout): void {
  const text = JSON.stringify(value);
  if (to.jsonFile) fs.writeFileSync(to.jsonFile, text + '\n');
  if (to.json) out.write((stdout && !stdout.atLineStart ? '\n' : '') + text + '\n');
}
