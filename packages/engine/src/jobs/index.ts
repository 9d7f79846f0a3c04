export { listJobs, latestJobId, type JobState, type NodeJob, type NodeListing } from './list.js';
export { startDetached, type DetachRequest, type DetachResult } from './detach.js';
export { streamLogs, type LogsHandle, type LogsRequest } from './logs.js';
export { cancelJob, type CancelOutcome } from './cancel.js';
