/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

export interface SignalRelayOptions {
  /** The worker's URL (the relay API is at `<url>/relay/v1`). */
  url: string
  /** Room id: 4..64 characters of [A-Za-z0-9_-]. */
  room: string
  /** Small JSON the other peers see with this peer (at most 1 KiB). */
  meta?: Json
  fetch?: typeof fetch
  /** `'auto'` (default): pushed over a WebSocket where the deployment offers
   *  it, else (or when the socket cannot be opened) polling; `'push'`: the
   *  socket only (`start()` rejects without it); `'poll'`: HTTP polling only. */
  transport?: 'auto' | 'push' | 'poll'
  /** A WebSocket class where there is no global one (Node 20: the `ws` package). */
  WebSocket?: new (url: string) => WebSocket
}

export interface RelayError extends Error {
  /** HTTP status, when the worker answered (for a socket closed with
   *  `4000 + status`, that status). */
  status?: number
  /** The close code, for an error from the socket. */
  code?: number
  /** The request is retried (network error, 429, 5xx). */
  retry?: boolean
  /** The relay stopped after refusals in a row (`cause`: the last one). */
  fatal?: boolean
}

export class SignalRelay {
  constructor (options: SignalRelayOptions)
  /** This peer's id, once `start()` resolved. */
  readonly id: string | null
  /** Peers in the room and their meta. */
  readonly peers: Map<string, Json>
  on (event: 'join', fn: (peerId: string, meta: Json) => void): this
  on (event: 'leave', fn: (peerId: string) => void): this
  on (event: 'signal', fn: (fromPeerId: string, data: Json) => void): this
  on (event: 'error', fn: (err: RelayError) => void): this
  off (event: string, fn: (...args: any[]) => void): this
  /** Joins; resolves once joined. */
  start (): Promise<this>
  /** Resolves when the worker has stored the message. */
  send (peerId: string, data: Json): Promise<void>
  broadcast (data: Json): Promise<void>
  /** Leaves for good (keepalive request). On `pagehide` it also leaves, and
   *  rejoins as a new peer if the page comes back from the back/forward cache. */
  stop (): void
}
