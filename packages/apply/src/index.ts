export * from './receiver.js';
export * from './data-stream.js';
