// A TCP proxy in front of an object-store server that counts the bytes each way, so the storage bench reads what
// reached the server from the server's side of the wire (request lines, headers and bodies included) rather than
// from a tool's own report. It runs as its own process because the bench blocks its event loop in spawnSync.
//
//   node count-proxy.mjs UPSTREAM_PORT
// prints one JSON line {"port": P, "control": C} once listening. Control (HTTP on C):
//   GET /counts -> {"toServer": bytes, "fromServer": bytes, "connections": n}
//   POST /reset -> zeroes the counters (connections still open keep counting into the new totals)

import http from 'node:http';
import net from 'node:net';

const upstreamPort = Number(process.argv[2]);
if (!Number.isInteger(upstreamPort)) {
  process.stderr.write('usage: node count-proxy.mjs UPSTREAM_PORT\n');
  process.exit(2);
}

let counts = { toServer: 0, fromServer: 0, connections: 0 };

const proxy = net.createServer((client) => {
  counts.connections++;
  const server = net.connect(upstreamPort, '127.0.0.1');
  client.on('data', (chunk) => {
    counts.toServer += chunk.length;
  });
  server.on('data', (chunk) => {
    counts.fromServer += chunk.length;
  });
  client.pipe(server);
  server.pipe(client);
  const end = () => {
    client.destroy();
    server.destroy();
  };
  client.on('error', end);
  server.on('error', end);
  client.on('close', end);
  server.on('close', end);
});

const control = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/reset') counts = { toServer: 0, fromServer: 0, connections: 0 };
  res.setHeader('content-type', 'application/json');
  // No keep-alive: the bench calls seconds apart, and a reused socket the server just timed out fails the fetch.
  res.setHeader('connection', 'close');
  res.end(JSON.stringify(counts));
});

await Promise.all([new Promise((r) => proxy.listen(0, '127.0.0.1', r)), new Promise((r) => control.listen(0, '127.0.0.1', r))]);
process.stdout.write(`${JSON.stringify({ port: proxy.address().port, control: control.address().port })}\n`);
