export { TaskError } from './errors.js';
export { parseDotenv, parseEnvAssignments } from './envs.js';
export type { FileMount } from './mounts.js';
export { placement } from './paths.js';
export { loadTask, parseTask, type LoadOptions, type Task } from './task.js';
export { closest, didYouMean } from './suggest.js';
