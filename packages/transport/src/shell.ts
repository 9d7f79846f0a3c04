// Shell words for POSIX sh, the one quoting every command line skysync builds goes through.

/** Characters that mean nothing to sh anywhere in a word (no `=`: a first word `a=b` would be an assignment). */
const PLAIN = /^[A-Za-z0-9_./:@%+,-]+$/;

/**
 * One shell word that sh reads back as exactly `s`: left bare when every character is plain (readable in
 * messages), else in single quotes, inside which only `'` itself needs care (closed, escaped, reopened). The
 * string is taken as it will be written: one char per byte for byte paths (latin1), or text sent as UTF-8.
 */
export function shellQuote(s: string): string {
  if (s.includes('\0')) throw new Error('a shell word cannot hold a NUL byte');
  return PLAIN.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}
