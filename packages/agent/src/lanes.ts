// Lanes: extra channels for a push's chunk data. Over SSH a channel moves at most its window (2 MiB with
// OpenSSH) per round trip, so on a long, fast link one channel leaves most of the link idle. The agent listens on
// a Unix socket in a directory only its user can enter; the client reaches it through its SSH connection
// (direct-streamlocal) and presents the push's one-time token. See docs/PROTOCOL.md, "Lanes".

import { randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Connection, Frame, LaneHello, type LaneOffer, MAGIC } from '@skysync/protocol';
import type { AgentContext } from './context.js';
import { readGreeting, tokenDigest } from './relay/wire.js';

/** Unix socket paths are limited to 108 bytes (104 on macOS); past that a lane cannot be offered. */
export const MAX_SOCKET_PATH = 100;
/** More lanes than this gain nothing and only cost memory on both sides. */
export const MAX_LANES = 16;

interface Expected {
  tokenHash: Buffer;
  admit: (id: number, conn: Connection) => void;
  used: Set<number>;
}

/**
 * One per agent process, opened at the first push that asks for lanes and kept while the agent lives (a warm
 * agent serves many pushes). Only the current push's token admits a lane.
 */
export class LaneServer {
  private expected: Expected | null = null;
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    readonly server: net.Server,
    readonly socketPath: string,
    private readonly log: (m: string) => void,
  ) {
    server.on('connection', (s) => this.accept(s));
  }

  static async open(home: string, log: (m: string) => void): Promise<LaneServer> {
    const dir = ensureRunDir(home);
    pruneStale(dir);
    const socketPath = path.join(dir, `lanes-${process.pid}.sock`);
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) throw new Error(`the socket path ${socketPath} is too long for a Unix socket`);
    fs.rmSync(socketPath, { force: true });
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    fs.chmodSync(socketPath, 0o600);
    server.unref();
    // The socket file goes with the process, however it ends short of a kill -9 (the next agent prunes those).
    process.once('exit', () => fs.rmSync(socketPath, { force: true }));
    return new LaneServer(server, socketPath, log);
  }

  /** Admits lanes presenting a fresh token to `admit`, until `closeExpected`. */
  expect(admit: (id: number, conn: Connection) => void): LaneOffer {
    const token = randomBytes(32).toString('hex');
    this.expected = { tokenHash: tokenDigest(token), admit, used: new Set() };
    return { socket: this.socketPath, token };
  }

  /** The push is over: its token admits nothing more, and its lanes are dropped. */
  closeExpected(): void {
    this.expected = null;
    for (const s of this.sockets) s.destroy();
  }

  private accept(sock: net.Socket): void {
    if (!this.expected || this.sockets.size >= MAX_LANES) {
      sock.destroy();
      return;
    }
    this.sockets.add(sock);
    sock.on('error', () => {});
    sock.on('close', () => this.sockets.delete(sock));
    this.admit(sock).catch((e: Error) => {
      this.log(`lane: ${e.message}`);
      sock.destroy();
    });
  }

  private async admit(sock: net.Socket): Promise<void> {
    const { payload, rest } = await readGreeting(sock, Frame.LaneHello);
    const expected = this.expected;
    let hello: LaneHello;
    try {
      hello = LaneHello.decode(payload);
    } catch {
      hello = {};
    }
    const given = typeof hello.token === 'string' ? hello.token : '';
    if (!expected || !timingSafeEqual(tokenDigest(given), expected.tokenHash)) throw new Error('refused: wrong token');
    const id = hello.lane;
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 1 || id > MAX_LANES || expected.used.has(id)) {
      throw new Error(`refused: lane number ${String(id)}`);
    }
    expected.used.add(id);
    sock.unshift(Buffer.concat([MAGIC, rest]));
    const conn = new Connection(sock, sock, 16);
    sock.resume();
    expected.admit(id, conn);
    await conn.sendJson(Frame.LaneHello, {} satisfies LaneHello);
  }
}

/** This agent's lane server, opened at first use; or why there is none (the client then uses one channel). */
export async function laneServer(ctx: AgentContext): Promise<LaneServer | { error: string }> {
  try {
    ctx.lanes ??= LaneServer.open(ctx.home, ctx.log);
    return await ctx.lanes;
  } catch (e) {
    ctx.lanes = undefined;
    return { error: (e as Error).message };
  }
}

/** Removes sockets left by agents that are gone (`lanes-<pid>.sock` whose process no longer exists). */
/** `~/.skysync/run`: the agent's sockets (lanes, destination watches), a directory only its user may enter. */
export function ensureRunDir(home: string): string {
  const dir = path.join(home, '.skysync', 'run');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  if (typeof process.getuid === 'function' && st.uid !== process.getuid()) throw new Error(`${dir} belongs to another user`);
  if ((st.mode & 0o077) !== 0) fs.chmodSync(dir, 0o700);
  return dir;
}

function pruneStale(dir: string): void {
  for (const name of fs.readdirSync(dir)) {
    const m = /^lanes-(\d+)\.sock$/.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') fs.rmSync(path.join(dir, name), { force: true });
    }
  }
}
