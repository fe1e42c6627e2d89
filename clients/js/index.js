// @ts-check
/** @realtime-channel/client: a WebSocket client for realtime-channel (protocol version 2),
 * for browsers and Node. No dependencies; ES module; types in index.d.ts. */
export { backoffDelay } from "./src/backoff.js";
export { connect } from "./src/client.js";
export { RealtimeError } from "./src/errors.js";
