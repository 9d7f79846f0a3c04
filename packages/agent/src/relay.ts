// The relay: a chunk server on the head of a cluster push, and a worker's fetch from it. The client's uplink then
// carries the literal data once (to the head); the other nodes take their copy over the cluster network, by chunk
// id, and check every chunk against its id as they would the client's. Wire format: docs/PROTOCOL.md, "Relay".

import net from 'node:net';
import os from 'node:os';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { HeldChunks, Receiver } from '@skysync/apply';
import { CHUNK_REF_SIZE, type Chunker, chunkRefId, chunkRefLen, writeChunkRef } from '@skysync/chunking';
import {
  Connection,
  Frame,
  MAGIC,
  ProtocolError,
  type Compression,
  RelayHello,
  type RelayOffer,
  type RelayReport,
  type ZstdBinding,
  chooseCompression,
  createBlockDecoder,
  frameName,
  remoteError,
  supportedCompressions,
} from '@skysync/protocol';
import { DataPump } from '@skysync/transfer';

/** Where the head has a chunk's bytes. */
export interface ChunkLocation {
  /** Relative to the push's root (latin1, as paths). */
  path: string;
  offset: number;
  /** Set for chunks in the temp files this push is writing (it knows their length); others are hashed first. */
  len?: number;
}

export interface ChunkSource {
  /** Where the chunk is, when that is known without waiting (null: the head will not have it); else undefined. */
  findNow(id: Buffer): ChunkLocation | null | undefined;
  /**
   * Where the chunk is, waiting while the head's own push may still receive it; null when it will not hold it.
   * `settled`: only once the push is over (a temp file of this push was renamed away meanwhile).
   */
  find(id: Buffer, settled?: boolean): Promise<ChunkLocation | null>;
}

/**
 * What the head holds while its own push runs: chunks of this push as they land in its temp files (the receiver
 * says so), then, once the push is recorded, whatever its records locate. A request for a chunk that is not here
 * yet waits as long as the push may still bring it.
 */
export class PushChunks implements ChunkSource {
  private receiver: Receiver | null = null;
  private settled = false;
  private renaming = false;
  private waiters: Array<() => void> = [];
  /** What each temp-file promise settled to (one promise per file or batch, shared by its chunks). */
  private readonly known = new WeakMap<Promise<string | null>, string | null>();
  private readonly tracked = new WeakSet<Promise<string | null>>();

  constructor(
    private held: HeldChunks,
    private holdsNothing: boolean,
  ) {}

  /** The head's receiver, once its plan arrived; it must call `onChunk` as each chunk lands. */
  attach(r: Receiver): void {
    this.receiver = r;
  }

  onChunk(key: string): void {
    const sc = this.receiver?.received(key);
    if (!sc) return;
    if (this.known.has(sc.file)) this.wake();
    else if (!this.tracked.has(sc.file)) {
      this.tracked.add(sc.file);
      const file = sc.file;
      file.then(
        (f) => {
          this.known.set(file, f);
          this.wake();
        },
        () => {
          this.known.set(file, null);
          this.wake();
        },
      );
    }
  }

  /**
   * The head's data has all arrived: its transition will rename temp files into place, and a large one is swapped
   * with the file it replaces (the temp name then holds the old bytes for a moment). From now on every chunk is
   * hashed before it is sent, wherever it comes from.
   */
  renamingSoon(): void {
    this.renaming = true;
  }

  /** The push is over and recorded (or never brought anything): from now on only the records answer. */
  settle(held: HeldChunks, holdsNothing: boolean): void {
    this.held = held;
    this.holdsNothing = holdsNothing;
    this.receiver = null;
    this.settled = true;
    this.wake();
  }

  private wake(): void {
    if (!this.waiters.length) return;
    for (const w of this.waiters.splice(0)) w();
  }

  private changed(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }

  private locate(id: Buffer): ChunkLocation | null {
    if (this.holdsNothing) return null;
    const loc = this.held.locate([id])[0];
    return loc ? { path: loc.path, offset: loc.offset } : null;
  }

  findNow(id: Buffer): ChunkLocation | null | undefined {
    const sc = this.receiver?.received(id.toString('latin1'));
    if (sc) {
      if (!this.known.has(sc.file)) return undefined;
      const f = this.known.get(sc.file);
      if (f) return this.renaming ? { path: f, offset: sc.offset } : { path: f, offset: sc.offset, len: sc.len };
    }
    return this.locate(id) ?? (this.settled ? null : undefined);
  }

  async find(id: Buffer, settled = false): Promise<ChunkLocation | null> {
    for (;;) {
      if (settled && this.settled) return this.locate(id);
      if (!settled) {
        const now = this.findNow(id);
        if (now !== undefined) return now;
      }
      await this.changed();
    }
  }
}

/** `SKYSYNC_RELAY=0` (or `off`, `false`, `no`) turns the relay off, on a client or on a node. */
export function relayDisabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return /^(0|off|false|no)$/i.test(env.SKYSYNC_RELAY ?? '');
}

const GREETING_MS = 5_000;
const MAX_GREETING = 4096;
const MAX_CONNECTIONS = 64;
/** Refs a connection may ask for in all: far more than any workdir has chunks, and a bound on its memory. */
const MAX_WANTED = 1 << 22;
/** The largest chunk a request may name (FastCDC's max is 64 KiB by default; chunk params are the client's). */
const MAX_CHUNK = 4 * 1024 * 1024;
/** A connection sending chunks that are all ready lets the event loop turn after this many bytes. */
const YIELD_BYTES = 1024 * 1024;
/** Refs per request frame. */
const WANT_BATCH = 16384;

export function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

// ---- addresses ----

function ipv4Number(a: string): number | null {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (!m) return null;
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

function inRange(a: number, base: string, bits: number): boolean {
  const b = ipv4Number(base)!;
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return (a & mask) >>> 0 === (b & mask) >>> 0;
}

/**
 * The head's addresses, best first. Nodes of one cluster reach each other by private address (SkyPilot's
 * SKYPILOT_NODE_IPS are private ones); public ones are usually firewalled between nodes but cost only a refused or
 * timed-out attempt. Link-local addresses need a scope and are skipped. Loopback goes last: it reaches the head
 * only where nodes share a host or a network namespace (containers, the test rig).
 */
export function headAddresses(ifaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces()): string[] {
  const ranked: Array<{ address: string; rank: number }> = [];
  for (const list of Object.values(ifaces)) {
    for (const i of list ?? []) {
      if (i.internal) continue;
      let rank: number;
      if (i.family === 'IPv4') {
        const n = ipv4Number(i.address);
        if (n === null || inRange(n, '169.254.0.0', 16)) continue;
        const priv = inRange(n, '10.0.0.0', 8) || inRange(n, '172.16.0.0', 12) || inRange(n, '192.168.0.0', 16) || inRange(n, '100.64.0.0', 10);
        rank = priv ? 0 : 1;
      } else {
        const a = i.address.toLowerCase();
        if (a.startsWith('fe8') || a.startsWith('fe9') || a.startsWith('fea') || a.startsWith('feb')) continue;
        rank = a.startsWith('fc') || a.startsWith('fd') ? 2 : 3;
      }
      ranked.push({ address: i.address, rank });
    }
  }
  ranked.sort((a, b) => a.rank - b.rank);
  const out = [...new Set(ranked.map((r) => r.address))];
  out.push('127.0.0.1');
  return out;
}

/**
 * The order a worker tries the head's addresses in: first those in one of its own subnets (the cluster network),
 * then the others as the head ranked them, and last the worker's own addresses (a bridge such as docker0 has the
 * same address on every host) and loopback.
 */
export function orderCandidates(addresses: string[], ifaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces()): string[] {
  const own = new Set<string>();
  const nets: Array<{ base: number; bits: number }> = [];
  for (const list of Object.values(ifaces)) {
    for (const i of list ?? []) {
      own.add(i.address);
      if (i.family === 'IPv4' && !i.internal && i.cidr) {
        const bits = Number(i.cidr.split('/')[1]);
        const base = ipv4Number(i.address);
        if (base !== null && bits >= 8) nets.push({ base, bits });
      }
    }
  }
  const rank = (a: string): number => {
    if (own.has(a) || a.startsWith('127.') || a === '::1') return 2;
    const n = ipv4Number(a);
    if (n !== null && nets.some((x) => ((n ^ x.base) >>> (32 - x.bits)) === 0)) return 0;
    return 1;
  };
  return addresses
    .map((a, i) => ({ a, i, r: rank(a) }))
    .sort((x, y) => x.r - y.r || x.i - y.i)
    .map((x) => x.a);
}

// ---- the head's side ----

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
    const wanted: Buffer[] = [];
    let taken = 0;
    let total = 0;
    let ended = false;
    let failure: Error | null = null;
    let kick: () => void = () => {};
    const reading = (async () => {
      while (!ended) {
        const f = await conn.next();
        if (!f) throw new ProtocolError('the worker went away');
        if (f.type === Frame.RelayWant) {
          if (f.payload.length % CHUNK_REF_SIZE) throw new ProtocolError('malformed relay request');
          total += f.payload.length / CHUNK_REF_SIZE;
          if (total > MAX_WANTED) throw new ProtocolError('relay request too large');
          for (let o = 0; o < f.payload.length; o += CHUNK_REF_SIZE) wanted.push(f.payload.subarray(o, o + CHUNK_REF_SIZE));
        } else if (f.type === Frame.PlanEnd) ended = true;
        else throw new ProtocolError(`unexpected ${frameName(f.type)} on a relay connection`);
        kick();
      }
    })().catch((e: Error) => {
      failure = e;
      kick();
    });
    const { source, chunker } = this.opts;
    let sinceYield = 0;
    for (;;) {
      if (failure) throw failure;
      if (taken >= wanted.length) {
        if (ended) break;
        await pump.flush();
        const woken = new Promise<void>((r) => (kick = r));
        if (taken >= wanted.length && !ended && !failure) await woken;
        continue;
      }
      const ref = wanted[taken++]!;
      // Requests are consumed in order: drop the ones sent so the array does not hold every ref to the end.
      if (taken === 65536) {
        wanted.splice(0, taken);
        taken = 0;
      }
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
    await reading;
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

// ---- the worker's side ----

export interface FetchOptions {
  chunker: Chunker;
  zstd: ZstdBinding | null;
  /** Gives up connecting after this long (all candidates together). */
  connectMs?: number;
  /** Gives up when nothing arrives for this long once connected. */
  idleMs?: number;
  /** Started one after another this far apart, the first to answer wins. */
  staggerMs?: number;
}

/**
 * Fetches chunks (ids with their lengths, in the receiver's order) from a relay and hands their bytes to
 * `deliver`, whole chunks only and each checked against its id. Never throws: the report says how many chunks
 * arrived, in order, and why it stopped short if it did; the caller takes the rest from the client.
 */
export async function fetchFromRelay(
  offer: RelayOffer,
  ids: Buffer[],
  lens: number[],
  deliver: (bytes: Buffer) => Promise<void>,
  opts: FetchOptions,
): Promise<RelayReport> {
  const t0 = performance.now();
  const report: RelayReport = { chunks: 0, bytes: 0, address: null, error: null, ms: 0 };
  let conn: Connection | null = null;
  let sock: net.Socket | null = null;
  let compression: Compression = 'none';
  try {
    const found = await connect(offer, opts);
    ({ conn, sock, compression } = found);
    report.address = found.address;
  } catch (e) {
    report.error = (e as Error).message;
    report.ms = performance.now() - t0;
    return report;
  }
  try {
    const decoder = createBlockDecoder(compression, opts.zstd);
    // Every request up front: the head answers in this order, as fast as it holds the chunks.
    const sending = (async () => {
      for (let i = 0; i < ids.length; i += WANT_BATCH) {
        const n = Math.min(WANT_BATCH, ids.length - i);
        const refs = Buffer.allocUnsafe(n * CHUNK_REF_SIZE);
        for (let k = 0; k < n; k++) writeChunkRef(refs, k, ids[i + k]!, lens[i + k]!);
        await conn!.send(Frame.RelayWant, refs);
      }
      await conn!.send(Frame.PlanEnd, Buffer.alloc(0));
    })();
    sending.catch(() => {});
    const pending: Buffer[] = [];
    let pendingLen = 0;
    const idleMs = opts.idleMs ?? 60_000;
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const f = await Promise.race([
        conn!.next(),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`nothing arrived for ${Math.round(idleMs / 1000)} s`)), idleMs))),
      ]).finally(() => clearTimeout(timer));
      if (!f) throw new Error('the head closed the relay connection early');
      if (f.type === Frame.Error) throw remoteError(f.payload);
      if (f.type === Frame.DataEnd) {
        if (report.chunks !== ids.length || pendingLen) throw new Error('the relay ended before every chunk arrived');
        break;
      }
      if (f.type !== Frame.Data) throw new ProtocolError(`unexpected ${frameName(f.type)} from the relay`);
      const block = decoder.decode(f.payload);
      pending.push(block);
      pendingLen += block.length;
      // Whole chunks only, so that a relay failing midway leaves the stream at a chunk boundary.
      let k = report.chunks;
      let whole = 0;
      while (k < ids.length && whole + lens[k]! <= pendingLen) whole += lens[k++]!;
      if (k === ids.length && whole < pendingLen) throw new ProtocolError('the relay sent more than was asked');
      if (whole === 0) continue;
      const bytes = take(pending, whole);
      pendingLen -= whole;
      const refs = Buffer.allocUnsafe((k - report.chunks) * CHUNK_REF_SIZE);
      for (let c = report.chunks; c < k; c++) writeChunkRef(refs, c - report.chunks, ids[c]!, lens[c]!);
      // Checked here as well as by the builder: a bad chunk from the head then costs a fallback to the client
      // for the rest, not a failed file.
      const bad = await opts.chunker.verifyChunks(bytes, refs);
      const good = bad < 0 ? k - report.chunks : bad;
      let goodBytes = 0;
      for (let c = 0; c < good; c++) goodBytes += lens[report.chunks + c]!;
      if (goodBytes) await deliver(goodBytes === bytes.length ? bytes : bytes.subarray(0, goodBytes));
      report.chunks += good;
      report.bytes += goodBytes;
      if (bad >= 0) throw new Error('a chunk from the relay does not match its id');
    }
  } catch (e) {
    report.error = (e as Error).message;
  } finally {
    sock?.destroy();
    report.ms = performance.now() - t0;
  }
  return report;
}

/** Joins and removes the first `n` bytes of `parts`. */
function take(parts: Buffer[], n: number): Buffer {
  if (parts[0]!.length === n) return parts.shift()!;
  if (parts[0]!.length > n) {
    const out = parts[0]!.subarray(0, n);
    parts[0] = parts[0]!.subarray(n);
    return out;
  }
  const out = Buffer.allocUnsafe(n);
  let filled = 0;
  while (filled < n) {
    const p = parts[0]!;
    const k = Math.min(p.length, n - filled);
    p.copy(out, filled, 0, k);
    filled += k;
    if (k === p.length) parts.shift();
    else parts[0] = p.subarray(k);
  }
  return out;
}

/**
 * Tries the candidates one after another, a little apart, without waiting for a slow one to time out; the first
 * to complete the handshake wins and the others are dropped.
 */
function connect(offer: RelayOffer, opts: FetchOptions): Promise<{ conn: Connection; sock: net.Socket; address: string; compression: Compression }> {
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
      if (started < candidates.length) return attempt();
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
