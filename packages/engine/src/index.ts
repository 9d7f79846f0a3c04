export { push, pushMany, checkSource, rescanOf, type MultiPushOptions, type PushOptions, type SessionOpener, type PushStats, type PushEvent, type SyncSummary } from './push.js';
export { pull, type PullOptions, type PullStats } from './pull.js';
export { Planner } from './plan.js';
export { stateRoot } from './state.js';
export { CLIENT_VERSION } from './session.js';
export { pushWithRsync, RsyncMissingError, SKYPILOT_RSYNC_FLAGS } from './rsync.js';
export { runJob, jobScript, shellQuote, type RemoteJob } from './run.js';
export { openSession, type Session } from './session.js';
export { askWatch, stopWatch, watchPersistSeconds, watchSocketPath, watchStatus, type WatchAnswer } from './watch.js';
