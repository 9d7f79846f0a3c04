// The relay: a chunk server on the head of a cluster push (server.ts) and a worker's fetch from it (client.ts).
// The client's uplink then carries the literal data once (to the head); the other nodes take their copy over the
// cluster network, by chunk id, and check every chunk against its id as they would the client's.

export { headAddresses, orderCandidates } from './addresses.js';
export { PushChunks, type ChunkLocation, type ChunkSource } from './chunk-source.js';
export { fetchFromRelay, type FetchOptions } from './client.js';
export { RelayServer, type RelayServerOptions } from './server.js';
export { readGreeting, relayDisabled, tokenDigest } from './wire.js';
