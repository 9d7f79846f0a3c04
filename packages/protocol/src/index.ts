export * from './binary.js';
export * from './paths.js';
export * from './wire.js';
export * from './messages.js';
export * from './entries.js';
export * from './codec.js';
export * from './trace.js';
export * from './hello.js';
export { ShapeError, type Infer, type Message, type Schema } from './schema.js';
