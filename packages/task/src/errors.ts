/** A task file problem. The message is always one line: "<file>: <key path>: <what is wrong>; <what to do>". */
export class TaskError extends Error {
  constructor(message: string) {
    // Values from the YAML may hold newlines; the CLI prints this as a single line.
    super(message.replace(/\s*[\r\n]+\s*/g, ' '));
    this.name = 'TaskError';
  }
}

/** Quote a user value for a message (JSON escaping keeps it on one line). */
export function q(value: string): string {
  return JSON.stringify(value);
}

export function fail(file: string, key: string, problem: string, fix: string): never {
  throw new TaskError(`${file}: ${key}: ${problem}; ${fix}`);
}
