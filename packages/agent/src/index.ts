export { main, serve, AGENT_VERSION } from './main.js';
export { decodeManifest, encodeManifest, manifestPath, type Manifest } from './manifest.js';
