// The socket of a background service (a warm connection, a watch service): one per key, so a second copy of the
// same service must find the first one and leave, while a socket a dead one left behind is taken over.

import fs from 'node:fs';
import net from 'node:net';

export interface PrivateListener {
  server: net.Server;
  /** The socket file's inode: the service removes the path on its way out only while it is still this one. */
  ino: number;
}

/** Listens on `socketPath`, a socket only its owner may use; null when another service answers there. */
export async function listenPrivate(socketPath: string, handler: (sock: net.Socket) => void): Promise<PrivateListener | null> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const server = net.createServer(handler);
    const ok = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(socketPath, () => resolve(true));
    });
    if (ok) {
      fs.chmodSync(socketPath, 0o600);
      return { server, ino: fs.statSync(socketPath).ino };
    }
    // Someone holds the path: a live service (then leave), or a leftover (then take it over).
    const live = await new Promise<boolean>((resolve) => {
      const c = net.createConnection(socketPath);
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (live) return null;
    fs.rmSync(socketPath, { force: true });
  }
  return null;
}
