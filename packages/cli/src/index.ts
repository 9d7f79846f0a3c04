export { run, buildProgram, splitRemote } from './main.js';
export { EXIT } from './exit-codes.js';
