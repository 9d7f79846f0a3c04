export * from './receiver.js';
export * from './data-stream.js';
export * from './lanes.js';
