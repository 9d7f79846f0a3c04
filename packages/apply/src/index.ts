export * from './receiver.js';
export * from './data-stream.js';
export * from './lanes.js';
export { RootGuard } from './root-guard.js';
export { deadLeftover, processRunning, processStart, sweepDeadLeftovers, tempName } from './temp-names.js';
