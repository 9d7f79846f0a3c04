// A worker reaching the head's relay: it tries the offered addresses a little apart and keeps the first that
// completes the handshake.

import net from 'node:net';
import { Connection, Frame, type Compression, RelayHello, type RelayOffer, type ZstdBinding, supportedCompressions } from '@skysync/protocol';
import { orderCandidates } from './addresses.js';

export interface ConnectOptions {
  zstd: ZstdBinding | null;
  /** Gives up connecting after this long (all candidates together). */
  connectMs?: number;
  /** Started one after another this far apart, the first to answer wins. */
  staggerMs?: number;
}

/** A connection to the head's relay that passed the handshake. */
export interface RelayLink {
  conn: Connection;
  sock: net.Socket;
  address: string;
  compression: Compression;
}

/**
 * Tries the candidates one after another, a little apart, without waiting for a slow one to time out; the first
 * to complete the handshake wins and the others are dropped.
 */
export function connect(offer: RelayOffer, opts: ConnectOptions): Promise<RelayLink> {
  const candidates = orderCandidates(offer.addresses);
  const connectMs = opts.connectMs ?? 3_000;
  const stagger = opts.staggerMs ?? 250;
  const prefs: Compression[] = ['none', ...supportedCompressions(opts.zstd).filter((c) => c !== 'none')];
  return new Promise((resolve, reject) => {
    const live = new Map<net.Socket, string>();
    const errors: string[] = [];
    const timers: NodeJS.Timeout[] = [];
    let settled = false;
    let started = 0;
    const finish = (): void => {
      settled = true;
      for (const t of timers) clearTimeout(t);
    };
    const maybeFail = (): void => {
      if (settled || live.size) return;
      // Nothing in flight: try the next address now rather than at its turn.
      if (started < candidates.length) {
        attempt();
        return;
      }
      finish();
      reject(new Error(`could not reach the head's relay (${errors.join('; ') || 'no address'})`));
    };
    const attempt = (): void => {
      if (settled || started >= candidates.length) return;
      const address = candidates[started++]!;
      const sock = net.connect({ host: address, port: offer.port });
      live.set(sock, address);
      sock.setNoDelay(true);
      const drop = (why: string): void => {
        if (!live.delete(sock)) return;
        sock.destroy();
        errors.push(`${address}: ${why}`);
        maybeFail();
      };
      sock.on('error', (e: NodeJS.ErrnoException) => drop(e.code ?? e.message));
      sock.once('connect', () => {
        // Data frames of up to 1 MiB at cluster-network speed: queue a few, not the default's hundreds.
        const conn = new Connection(sock, sock, 16);
        conn.sendJson(Frame.RelayHello, { token: offer.token, compression: prefs } satisfies RelayHello).catch(() => {});
        conn
          .expect(Frame.RelayHello)
          .then((f) => {
            if (settled || !live.has(sock)) return void sock.destroy();
            const h = RelayHello.decode(f.payload);
            const c = h.compression?.[0];
            if (!c || !prefs.includes(c)) return drop(`it chose a compression we did not offer (${String(c)})`);
            live.delete(sock);
            finish();
            for (const other of live.keys()) other.destroy();
            resolve({ conn, sock, address, compression: c });
          })
          .catch((e: Error) => drop(e.message));
      });
    };
    for (let i = 1; i < candidates.length; i++) timers.push(setTimeout(attempt, i * stagger));
    timers.push(
      setTimeout(() => {
        if (settled) return;
        for (const [s, a] of live) {
          s.destroy();
          errors.push(`${a}: no answer`);
        }
        live.clear();
        started = candidates.length;
        finish();
        reject(new Error(`could not reach the head's relay within ${(connectMs / 1000).toFixed(1)} s (${errors.join('; ') || 'no answer'})`));
      }, connectMs),
    );
    maybeFail();
  });
}
