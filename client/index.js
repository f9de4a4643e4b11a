// p2pcf-rs-client: browser helpers for a p2pcf-rs worker. Each helper is
// also its own entry point (p2pcf-rs-client/relay, /turn, /hints,
// /peer-message, /fast-rtc-swarm), so a bundler takes only what is used.
export { SignalRelay } from './relay.js'
export { fetchTurnCredentials, useTurnCredentials } from './turn.js'
export { followHints } from './hints.js'
export { peerMessageSignal } from './peer-message.js'
export { swarmOverRelay } from './fast-rtc-swarm.js'
