// Which of the head's addresses a worker should try, and in what order: the head ranks what it offers, the
// worker reorders it by the networks it is on itself.

import os from 'node:os';

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
    if (n !== null && nets.some((x) => (n ^ x.base) >>> (32 - x.bits) === 0)) return 0;
    return 1;
  };
  return addresses
    .map((a, i) => ({ a, i, r: rank(a) }))
    .sort((x, y) => x.r - y.r || x.i - y.i)
    .map((x) => x.a);
}
