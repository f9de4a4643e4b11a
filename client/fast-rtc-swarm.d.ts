import type { SignalRelay } from './relay.js'

/** The parts of a fast-rtc-swarm (0.4.x) instance the adapter uses. */
export interface FastRTCSwarmLike {
  on (event: 'signal', fn: (signal: { id?: string, type: string, [key: string]: unknown }) => void): unknown
  dispatch (payload: { type: string, [key: string]: unknown }): void
}

/**
 * Does fast-rtc-swarm's server side over a SignalRelay: each member serves
 * its own offers to members with larger ids. Call right after creating the
 * swarm, with `userId: relay.id`; returns the swarm.
 */
export function swarmOverRelay<S extends FastRTCSwarmLike> (swarm: S, relay: SignalRelay): S
