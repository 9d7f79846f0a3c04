export * from './target.js';
export * from './local.js';
