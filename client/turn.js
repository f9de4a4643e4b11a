// Short-lived TURN credentials from the worker's `GET /turn`, for the stock
// p2pcf client (or any RTCPeerConnection). No dependencies.
//
//   import { useTurnCredentials } from 'p2pcf-rs-client/turn'
//   const p2pcf = new P2PCF(clientId, roomId, { workerUrl })
//   const turn = useTurnCredentials(p2pcf, workerUrl)
//   await turn.ready        // credentials in place (rejects if /turn fails)
//   p2pcf.start()

/**
 * Fetches `{ iceServers, expiresAt, expiresIn }` from the worker
 * (`expiresAt`: ms since the epoch, by the worker's clock; `expiresIn`: ms
 * from the answer). Adds `receivedAt`, this page's `performance.now()` when
 * the answer arrived: count the lifetime from there, since a page's wall
 * clock may be off by hours. Throws with the worker's reason when it
 * answers an error. On a deployment with signed rooms, pass the signed
 * `room` id: it goes in the `X-Room` header as proof of membership.
 */
export async function fetchTurnCredentials (workerUrl, { fetch: doFetch = globalThis.fetch, room } = {}) {
  const url = workerUrl.replace(/\/+$/, '') + '/turn'
  const res = await (room ? doFetch(url, { headers: { 'X-Room': room } }) : doFetch(url))
  if (!res.ok) throw new Error(`GET /turn: ${res.status} ${await res.text()}`)
  const credentials = await res.json()
  if (!Array.isArray(credentials.iceServers) || typeof credentials.expiresAt !== 'number') {
    throw new Error('GET /turn: unexpected answer')
  }
  credentials.receivedAt = monotonicNow()
  return credentials
}

/**
 * Hands the worker's TURN credentials to a stock p2pcf client and renews
 * them `renewBeforeMs` before they expire.
 *
 * The stock client reads `turnIceServers` only for pairs where one side is
 * behind a symmetric NAT, and `stunIceServers` for every other pair (and for
 * its network probe every 15 s), each time it creates a connection. So by
 * default (`allPeers: true`) the TURN servers go into both: any pair can
 * fall back to the relay, at the cost of a short TURN allocation per probe.
 * With `allPeers: false` only symmetric-NAT pairs use them. To force every
 * connection through the relay, also pass
 * `rtcPeerConnectionOptions: { iceTransportPolicy: 'relay' }` to the client.
 *
 * In a signed room (`<name>_<expiry>_<mac>`, see sign-room.js) the client's
 * `roomId` goes along as proof of membership, unless `room` says otherwise.
 *
 * Returns `{ ready, stop, last }`: `ready` settles once the first credentials
 * are in place; `stop()` ends the renewals; `last()` is the latest answer.
 */
export function useTurnCredentials (p2pcf, workerUrl, { allPeers = true, renewBeforeMs = 60000, onError, fetch, room = signedRoomOf(p2pcf) } = {}) {
  const stunOnly = p2pcf.stunIceServers || []
  let timer = null
  let stopped = false
  let last = null

  const schedule = ms => {
    clearTimeout(timer)
    if (!stopped) timer = setTimeout(() => { refresh().catch(() => {}) }, Math.max(5000, ms))
  }

  const refresh = async () => {
    try {
      const credentials = await fetchTurnCredentials(workerUrl, { ...(fetch ? { fetch } : {}), ...(room ? { room } : {}) })
      if (stopped) return credentials
      last = credentials
      p2pcf.turnIceServers = credentials.iceServers
      if (allPeers) p2pcf.stunIceServers = [...stunOnly, ...credentials.iceServers]
      schedule(lifetimeMs(credentials) - renewBeforeMs)
      return credentials
    } catch (err) {
      if (onError) onError(err)
      schedule(30000)
      throw err
    }
  }

  return {
    ready: refresh(),
    stop () {
      stopped = true
      clearTimeout(timer)
    },
    last: () => last
  }
}

const monotonicNow = () => globalThis.performance?.now?.() ?? Date.now()

/**
 * How long credentials stay valid from their receipt: `expiresIn` when the
 * worker sends it (measured from the answer, so this page's clock does not
 * matter), else the time left by this page's clock, at most an hour.
 */
function lifetimeMs (credentials) {
  if (typeof credentials.expiresIn === 'number') return credentials.expiresIn
  return Math.min(3600000, Math.max(0, credentials.expiresAt - Date.now()))
}

/** The client's room id when it is a signed one (the worker's format), else undefined. */
function signedRoomOf (p2pcf) {
  const id = p2pcf.roomId
  return typeof id === 'string' && /_\d{10}_[A-Za-z0-9_-]{16}$/.test(id) ? id : undefined
}
