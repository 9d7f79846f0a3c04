// Ctrl-C while data moves: the user learns what stopped and that nothing needs repairing. A push places each
// file whole (written aside, then renamed), and the next one sweeps what was cut off and plans from what the
// remote holds, so running it again converges; a pull keeps what it placed and fetches the rest next time.

import { EXIT_INTERRUPTED } from './exit-codes.js';

/** What Ctrl-C during a sync says: `what` names the sync ("the push of ./proj to dev"). */
export function interruptedMessage(what: string, again: string): string {
  return `skysync: interrupted ${what}; files already placed stay, none is left half-written; run ${again} again: it picks up from there and converges`;
}

/**
 * Until the returned function is called, SIGINT (and SIGTERM) end the process with 130 after `cleanup` (the
 * progress rows) and the message.
 */
export function exitOnInterrupt(message: string, cleanup: () => void, print: (l: string) => void): () => void {
  const onSignal = (): void => {
    cleanup();
    print(`\n${message}`);
    process.exit(EXIT_INTERRUPTED);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}
