// The client side of a background service: one JSON line each way per connection.

import net from 'node:net';

/** One request, one answer line; rejects with the socket's error code, or 'ETIMEDOUT'. */
export function requestLine(socket: string, req: Record<string, unknown>, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(socket);
    let buf = '';
    let done = false;
    const finish = (err: Error | null, value?: Record<string, unknown>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(value!);
    };
    const timer = setTimeout(() => finish(Object.assign(new Error('no answer from the service'), { code: 'ETIMEDOUT' })), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        finish(null, JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      } catch (e) {
        finish(e as Error);
      }
    });
    sock.on('error', (e) => finish(e));
    sock.on('close', () => finish(Object.assign(new Error('the service closed the connection'), { code: 'ECONNRESET' })));
  });
}
