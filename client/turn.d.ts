/** One RTCIceServer as the worker's `GET /turn` answers it. */
export interface TurnIceServer {
  urls: string[]
  username?: string
  credential?: string
}

/** The answer of `GET /turn`: servers and when their credentials expire (ms since the epoch). */
export interface TurnCredentials {
  iceServers: TurnIceServer[]
  expiresAt: number
  /** Ms from the answer until `expiresAt` (count from `receivedAt`). */
  expiresIn?: number
  /** This page's `performance.now()` when the answer arrived. */
  receivedAt: number
}

export function fetchTurnCredentials (
  workerUrl: string,
  options?: {
    fetch?: typeof fetch
    /** The signed room id, sent as proof of membership where rooms are signed. */
    room?: string
  }
): Promise<TurnCredentials>

/** The parts of a stock p2pcf client this helper sets. */
export interface TurnTarget {
  stunIceServers: RTCIceServer[]
  turnIceServers: RTCIceServer[]
  /** A signed room id here is sent along as proof of membership. */
  roomId?: string
}

export function useTurnCredentials (
  p2pcf: TurnTarget,
  workerUrl: string,
  options?: {
    /** Add the TURN servers to `stunIceServers` too, so every pair can use them (default true). */
    allPeers?: boolean
    /** Renew this long before expiry (default 60000 ms). */
    renewBeforeMs?: number
    onError?: (err: Error) => void
    fetch?: typeof fetch
    /** The signed room id, sent as proof of membership where rooms are signed (default: the client's `roomId` when it is a signed id). */
    room?: string
  }
): { ready: Promise<TurnCredentials>; stop(): void; last(): TurnCredentials | null }
