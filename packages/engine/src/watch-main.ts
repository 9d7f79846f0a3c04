// The watch service of a source directory (see watch.ts), started detached by a push.

import { loadNative } from '@skysync/chunking';
import { serveWatch, type WatchAddon, type WatchServiceArgs } from '@skysync/service';
import { nativeAddonPath } from '@skysync/transport';
import { ensureWatchDir } from './watch.js';

const args = JSON.parse(process.argv[2] ?? '{}') as WatchServiceArgs;
ensureWatchDir();
const addon = process.env.SKYSYNC_NATIVE_PATH || nativeAddonPath();
void serveWatch({ ...args, build: [process.argv[1]!, ...(addon ? [addon] : [])] }, loadNative() as WatchAddon | null);
