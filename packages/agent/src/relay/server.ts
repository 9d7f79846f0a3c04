// The head's side of the relay: a chunk server on the head of a cluster push. The client's uplink then carries the
// literal data once (to the head); the other nodes take their copy over the cluster network, by chunk id.
// Wire format: docs/PROTOCOL.md, "Relay".

import net from 'node:net';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { type Chunker, chunkRefId, chunkRefLen } from '@skysync/chunking';
import {
  Connection,
  Frame,
  MAGIC,
  ProtocolError,
  type Compression,
  RelayHello,
  type RelayOffer,
  type ZstdBinding,
  chooseCompression,
  supportedCompressions,
} from '@skysync/protocol';
import { DataPump } from '@skysync/transfer';
import { headAddresses } from './addresses.js';
import type { ChunkLocation, ChunkSource } from './chunk-source.js';
import { ChunkRequests } from './requests.js';
import { readGreeting, tokenDigest } from './wire.js';

const MAX_CONNECTIONS = 64;
/** The largest chunk a request may name (FastCDC's max is 64 KiB by default; chunk params are the client's). */
const MAX_CHUNK = 4 * 1024 * 1024;
/** A connection sending chunks that are all ready lets the event loop turn after this many bytes. */
const YIELD_BYTES = 1024 * 1024;

export interface RelayServerOptions {
  /** The push's root: every location is relative to it. */
  root: string;
  source: ChunkSource;
  chunker: Chunker;
  zstd: ZstdBinding | null;
  log: (m: string) => void;
  /** Closes itself after this long without a connection (the client normally closes it first). */
  idleMs?: number;
}

/**
 * Serves chunk bytes by id to whoever presents the token, for as long as the push that opened it lasts. It never
 * takes a path from the network: a request names chunk ids (and lengths), and only bytes whose id is that one are
 * sent (this push's own files by their recorded length, older files hashed first).
 */
export class RelayServer {
  readonly token = randomBytes(32).toString('hex');
  private readonly tokenHash = tokenDigest(this.token);
  private readonly server = net.createServer((s) => this.accept(s));
  private readonly sockets = new Set<net.Socket>();
  private idle: NodeJS.Timeout | null = null;
  private closed = false;
  /** Chunk bytes sent, over all connections. */
  bytesServed = 0;
  connections = 0;

  private constructor(private readonly opts: RelayServerOptions) {}

  static async open(opts: RelayServerOptions): Promise<RelayServer> {
    const r = new RelayServer(opts);
    await new Promise<void>((resolve, reject) => {
      r.server.once('error', reject);
      // All interfaces: which one the workers can reach is theirs to find out, from the candidates offered.
      r.server.listen(0, () => {
        r.server.off('error', reject);
        r.port = (r.server.address() as net.AddressInfo).port;
        resolve();
      });
    });
    r.server.on('error', (e) => opts.log(`relay: ${e.message}`));
    r.touch();
    return r;
  }

  /** The port it listens on (kept once closed, for messages). */
  port = 0;

  offer(addresses = headAddresses()): RelayOffer {
    return { addresses, port: this.port, token: this.token };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.idle) clearTimeout(this.idle);
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private touch(): void {
    if (this.idle) clearTimeout(this.idle);
    this.idle = null;
    if (this.closed || this.sockets.size) return;
    this.idle = setTimeout(() => void this.close(), this.opts.idleMs ?? 600_000);
    this.idle.unref();
  }

  private accept(sock: net.Socket): void {
    if (this.closed || this.sockets.size >= MAX_CONNECTIONS) {
      sock.destroy();
      return;
    }
    this.sockets.add(sock);
    this.touch();
    sock.on('error', () => {});
    sock.on('close', () => {
      this.sockets.delete(sock);
      this.touch();
    });
    sock.setNoDelay(true);
    this.serve(sock).catch((e: Error) => {
      this.opts.log(`relay: ${sock.remoteAddress ?? '?'}: ${e.message}`);
      sock.destroy();
    });
  }

  private async serve(sock: net.Socket): Promise<void> {
    const { payload, rest } = await readGreeting(sock);
    sock.unshift(Buffer.concat([MAGIC, rest]));
    const conn = new Connection(sock, sock);
    sock.resume();
    let hello: RelayHello;
    try {
      hello = RelayHello.decode(payload);
    } catch {
      hello = { compression: [] };
    }
    const given = typeof hello.token === 'string' ? hello.token : '';
    if (!timingSafeEqual(tokenDigest(given), this.tokenHash)) {
      await conn.sendJson(Frame.Error, { message: 'relay: wrong token', code: 'relay-auth' }).catch(() => {});
      sock.end();
      throw new Error('refused: wrong token');
    }
    this.connections++;
    const theirs = Array.isArray(hello.compression) ? hello.compression.filter((c): c is Compression => typeof c === 'string') : [];
    const compression = chooseCompression(theirs, supportedCompressions(this.opts.zstd));
    await conn.sendJson(Frame.RelayHello, { compression: [compression] } satisfies RelayHello);
    const pump = new DataPump(conn, compression, this.opts.zstd, this.opts.root);
    try {
      await this.pumpChunks(conn, pump);
    } finally {
      pump.closeFiles();
    }
    sock.end();
  }

  /** Reads requests as they come while sending, in request order, what was asked. */
  private async pumpChunks(conn: Connection, pump: DataPump): Promise<void> {
    const requests = new ChunkRequests(conn);
    const { source, chunker } = this.opts;
    let sinceYield = 0;
    for (;;) {
      const ref = await requests.next(() => pump.flush());
      if (!ref) break;
      const id = chunkRefId(ref, 0);
      const len = chunkRefLen(ref, 0);
      if (len === 0 || len > MAX_CHUNK) throw new ProtocolError('relay request names an impossible chunk length');
      let loc = source.findNow(id);
      if (loc === undefined) {
        // Send what is ready before waiting for the head's own push to receive this one.
        await pump.flush();
        loc = await source.find(id);
      }
      // Chunks that are ready are sent without a turn of the event loop in between: let the head's own push (and the
      // other connections) have one every block or so.
      sinceYield += len;
      if (sinceYield >= YIELD_BYTES) {
        sinceYield = 0;
        await new Promise<void>((r) => setImmediate(r));
      }
      if (!(await this.send(pump, id, len, loc, chunker))) {
        await pump.flush().catch(() => {});
        await conn.sendJson(Frame.Error, { message: `the head does not hold chunk ${id.toString('hex').slice(0, 16)}`, code: 'relay-missing' });
        return;
      }
    }
    await requests.reading;
    await pump.finish();
  }

  /** Adds one chunk's bytes, or says it cannot. */
  private async send(pump: DataPump, id: Buffer, len: number, loc: ChunkLocation | null, chunker: Chunker): Promise<boolean> {
    for (let attempt = 0; loc && attempt < 2; attempt++) {
      try {
        if (loc.len !== undefined) {
          if (loc.len !== len) return false;
          await pump.addFromFile(loc.path, loc.offset, len);
        } else {
          const bytes = pump.readAt(loc.path, loc.offset, len);
          if (!bytes || !chunker.blake3(bytes).equals(id)) throw new Error('changed on disk');
          await pump.add(bytes);
        }
        this.bytesServed += len;
        return true;
      } catch {
        // A temp file renamed into place by the transition, or a placed file replaced since: ask again once the
        // head's push has recorded where everything is.
        pump.closeFile(loc.path);
        loc = await this.opts.source.find(id, true);
      }
    }
    return false;
  }
}
