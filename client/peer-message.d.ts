import type { SignalRelay } from './relay.js'

/** The `signal` option Peer Message takes. */
export interface PeerMessageSignal {
  channel: string
  send: (message: string) => void
  receive: (update: (message: string) => void) => void
}

export function peerMessageSignal (relay: SignalRelay, peerId: string, channel?: string): PeerMessageSignal
