export { listenPrivate, type PrivateListener } from './listen.js';
export { requestLine } from './request.js';
export {
  askWatchService,
  fullAnswer,
  serveWatch,
  stopWatchService,
  watchPersistSeconds,
  watchServiceStatus,
  type WatchAddon,
  type WatchAnswer,
  type WatchServiceArgs,
} from './watch.js';
export { WATCH_SERVICE_VERSION, watchServiceKey } from './watch-key.js';
