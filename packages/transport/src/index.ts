export * from './target.js';
export * from './local.js';
export * from './ssh.js';
export * from './parse.js';
export { resolveHost, listWorkers, parseTargetSpec, type ResolvedHost } from './ssh-config.js';
export { listenPrivate, type PrivateListener } from '@skysync/service';
export { controlShutdown, controlSocketPath, ensureControlDir, persistSeconds } from './control.js';
