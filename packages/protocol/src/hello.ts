// The first message each way, and the one check both sides make of the other's: same protocol version, and the
// role expected at that end (a client talks to an agent, never to another client).

import { ProtocolError } from './binary.js';
import { Hello, type Compression } from './messages.js';
import { PROTOCOL_VERSION } from './wire.js';

export interface HelloOptions {
  role: Hello['role'];
  software: string;
  compression: Compression[];
  native: boolean;
  capabilities?: string[];
}

/** This side's hello: what it offers, with the protocol version, platform and Node version filled in. */
export function makeHello(o: HelloOptions): Hello {
  return {
    protocol: PROTOCOL_VERSION,
    software: o.software,
    role: o.role,
    compression: o.compression,
    native: o.native,
    platform: `${process.platform}-${process.arch}`,
    node: process.version,
    ...(o.capabilities ? { capabilities: o.capabilities } : {}),
  };
}

/**
 * Decodes the peer's hello and checks that this side can speak with it. `from`: the role the peer must have;
 * `peer` names it in errors ("the agent on host", "the client").
 */
export function checkHello(payload: Buffer, from: Hello['role'], peer: string): Hello {
  const hello = Hello.decode(payload);
  const self = from === 'agent' ? 'client' : 'agent';
  if (hello.role !== from) throw new ProtocolError(`${peer} says it is a skysync ${hello.role}, not the expected ${from}`);
  if (hello.protocol !== PROTOCOL_VERSION) {
    throw new ProtocolError(`${peer} speaks protocol ${hello.protocol}, this ${self} ${PROTOCOL_VERSION}`);
  }
  return hello;
}
