#!/usr/bin/env node
// A TCP relay that holds every byte for a fixed time in each direction: the round-trip delay of a WAN link, for a
// kernel without netem. Byte order is kept (one FIFO per direction), and it pushes back: a direction stops
// reading from its source when it holds more than --max-buffer bytes or when the destination socket is full, so
// a fast sender cannot make it buffer without bound.
//
//   node bench/rig/delay-proxy.mjs --listen 127.0.0.1:0 --target 10.213.37.2:2222 --delay-ms 10 \
//        [--port-file FILE] [--max-buffer BYTES]
//
// --delay-ms is one way: 10 gives a 20 ms round trip. With --port-file, the port it listens on is written there
// once it listens (handy with port 0). Runs until killed; SIGTERM/SIGINT close the listener and every connection.

import fs from 'node:fs';
import net from 'node:net';

function parse(argv) {
  const o = { listen: '127.0.0.1:0', target: null, delayMs: 10, portFile: null, maxBuffer: 8 * 1024 * 1024 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--listen') o.listen = v();
    else if (a === '--target') o.target = v();
    else if (a === '--delay-ms') o.delayMs = Number(v());
    else if (a === '--port-file') o.portFile = v();
    else if (a === '--max-buffer') o.maxBuffer = Number(v());
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.target) throw new Error('--target HOST:PORT is required');
  if (!(o.delayMs >= 0)) throw new Error('--delay-ms must be >= 0');
  return o;
}

function hostPort(s) {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

/**
 * One direction of a connection: bytes read from `src` are written to `dst` `delayMs` after they arrived.
 * `ready()` says whether `dst` can be written to yet (the upstream socket may still be connecting).
 */
class DelayedPipe {
  constructor(src, dst, delayMs, maxBuffer, ready) {
    this.src = src;
    this.dst = dst;
    this.delayMs = delayMs;
    this.maxBuffer = maxBuffer;
    this.ready = ready;
    this.queue = []; // { due, buf }, oldest first
    this.head = 0;
    this.held = 0; // bytes in the queue
    this.ended = false; // src sent FIN
    this.finished = false; // FIN passed on to dst
    this.blocked = false; // dst's buffer is full: wait for 'drain'
    this.timer = null;
    this.pausedSrc = false;
    src.on('data', (buf) => this.onData(buf));
    src.on('end', () => {
      this.ended = true;
      this.pump();
    });
    dst.on('drain', () => {
      this.blocked = false;
      this.pump();
    });
  }

  onData(buf) {
    this.queue.push({ due: nowMs() + this.delayMs, buf });
    this.held += buf.length;
    if (this.held >= this.maxBuffer && !this.pausedSrc) {
      this.pausedSrc = true;
      this.src.pause();
    }
    this.pump();
  }

  pump() {
    if (this.timer || this.dst.destroyed || !this.ready()) return;
    const now = nowMs();
    while (this.head < this.queue.length && !this.blocked) {
      const item = this.queue[this.head];
      if (item.due > now) {
        this.timer = setTimeout(
          () => {
            this.timer = null;
            this.pump();
          },
          Math.max(1, Math.ceil(item.due - now)),
        );
        break;
      }
      this.queue[this.head++] = undefined;
      this.held -= item.buf.length;
      if (!this.dst.write(item.buf)) this.blocked = true;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (this.pausedSrc && this.held < this.maxBuffer / 2 && !this.blocked) {
      this.pausedSrc = false;
      this.src.resume();
    }
    if (this.ended && !this.finished && this.head >= this.queue.length && !this.timer) {
      this.finished = true;
      this.dst.end();
    }
  }

  stop() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

const opts = parse(process.argv.slice(2));
const target = hostPort(opts.target);
const listen = hostPort(opts.listen);
const conns = new Set();

const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (client) => {
  client.setNoDelay(true);
  let connected = false;
  const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
  upstream.setNoDelay(true);
  const up = new DelayedPipe(client, upstream, opts.delayMs, opts.maxBuffer, () => connected);
  const down = new DelayedPipe(upstream, client, opts.delayMs, opts.maxBuffer, () => true);
  const conn = { client, upstream, up, down };
  conns.add(conn);
  upstream.on('connect', () => {
    connected = true;
    up.pump();
  });
  let closed = 0;
  const onClose = () => {
    if (++closed < 2) return;
    up.stop();
    down.stop();
    conns.delete(conn);
  };
  const fail = () => {
    // A reset on one side resets the other (after the delay would be nicer, but nothing relies on it).
    client.destroy();
    upstream.destroy();
  };
  client.on('error', fail);
  upstream.on('error', fail);
  client.on('close', () => {
    if (!client.readableEnded || !client.writableFinished) upstream.destroy();
    onClose();
  });
  upstream.on('close', () => {
    // Let the queued bytes reach the client first; then close it.
    if (!upstream.readableEnded) client.destroy();
    onClose();
  });
});

server.on('error', (e) => {
  process.stderr.write(`delay-proxy: ${e.message}\n`);
  process.exit(1);
});

server.listen(listen.port, listen.host, () => {
  const port = server.address().port;
  if (opts.portFile) {
    const tmp = `${opts.portFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${port}\n`);
    fs.renameSync(tmp, opts.portFile);
  }
  process.stderr.write(`delay-proxy: ${listen.host}:${port} -> ${opts.target}, ${opts.delayMs} ms each way\n`);
});

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(sig, () => {
    server.close();
    for (const c of conns) {
      c.client.destroy();
      c.upstream.destroy();
    }
    process.exit(0);
  });
}
