/** Exit codes, documented in README.md. */
export const EXIT = {
  ok: 0,
  /** Something failed: nothing or only part was synced; the message says what. */
  failure: 1,
  /** The command line or the input was wrong. */
  usage: 2,
  /** Synced, but some files could not be read or placed (listed). */
  partial: 3,
} as const;

export class UsageError extends Error {
  override name = 'UsageError';
}

/** Ctrl-C (SIGINT) during a sync, as a shell reports a process it interrupted. */
export const EXIT_INTERRUPTED = 130;
