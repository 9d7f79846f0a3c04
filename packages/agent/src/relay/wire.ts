// What both ends of the relay share: the switch that turns it off, the token's digest, and the guarded read of a
// peer's first frame. Wire format: docs/PROTOCOL.md, "Relay".

import type net from 'node:net';
import { createHash } from 'node:crypto';
import { Frame, MAGIC } from '@skysync/protocol';

const GREETING_MS = 5_000;
const MAX_GREETING = 4096;

/** `SKYSYNC_RELAY=0` (or `off`, `false`, `no`) turns the relay off, on a client or on a node. */
export function relayDisabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return /^(0|off|false|no)$/i.test(env.SKYSYNC_RELAY ?? '');
}

export function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/**
 * The first frame, read by hand: it must be MAGIC at once and a small greeting frame of `type` (a relay-hello, a
 * lane-hello), within a few seconds, so that a peer without the token can make us buffer next to nothing.
 */
export function readGreeting(sock: net.Socket, type: number = Frame.RelayHello): Promise<{ payload: Buffer; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const headLen = MAGIC.length + 5;
    const done = (e: Error | null, v?: { payload: Buffer; rest: Buffer }): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('end', onEnd);
      if (e) reject(e);
      else resolve(v!);
    };
    const onData = (d: Buffer): void => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      const n = Math.min(buf.length, MAGIC.length);
      if (!buf.subarray(0, n).equals(MAGIC.subarray(0, n))) return done(new Error('refused: not a skysync peer'));
      if (buf.length < headLen) return;
      const len = buf.readUInt32LE(MAGIC.length);
      if (buf[MAGIC.length + 4] !== type || len < 1 || len > MAX_GREETING) return done(new Error('refused: bad greeting'));
      const end = MAGIC.length + 4 + len;
      if (buf.length < end) return;
      sock.pause();
      done(null, { payload: buf.subarray(headLen, end), rest: buf.subarray(end) });
    };
    const onEnd = (): void => done(new Error('closed before its greeting'));
    const timer = setTimeout(() => done(new Error('refused: no greeting in time')), GREETING_MS);
    sock.on('data', onData);
    sock.once('end', onEnd);
  });
}
