// The PeerJS test page: an unchanged PeerJS `Peer` signalled through
// `host`:`port` `path` (the worker's /peerjs, or PeerJS's own server), with
// no STUN (two pages on loopback connect with host candidates). The test
// calls begin(), connectTo(id) and send(); everything is noted in `events`
// with ms since the page loaded. On `disconnected` the page reconnects, as
// PeerJS apps do.
import { Peer } from 'peerjs'

const params = new URLSearchParams(location.search)
const t0 = performance.now()
const at = () => Math.round(performance.now() - t0)
const events = (window.events = [])
const note = (...e) => events.push([...e, at()])
window.t0Wall = performance.timeOrigin + t0

function watch (conn) {
  conn.on('open', () => note('conn-open', conn.peer))
  conn.on('data', data => note('data', conn.peer, data))
  conn.on('close', () => note('conn-close', conn.peer))
  conn.on('error', e => note('conn-error', conn.peer, e.type))
}

window.begin = () => {
  window.startedAt = at()
  const peer = new Peer(params.get('id') || undefined, {
    host: params.get('host'),
    port: Number(params.get('port')),
    path: params.get('path'),
    secure: false,
    config: { iceServers: [] }
  })
  peer.on('open', id => note('open', id))
  peer.on('connection', conn => { note('connection', conn.peer); watch(conn) })
  peer.on('error', e => note('error', e.type))
  peer.on('disconnected', () => { note('disconnected'); peer.reconnect() })
  window.peer = peer
}
window.connectTo = id => {
  note('connect', id)
  const conn = window.peer.connect(id, { reliable: true })
  watch(conn)
}
/** Sends on every open connection to `id`. */
window.send = (id, data) => {
  for (const conn of window.peer.connections[id] ?? []) if (conn.open) conn.send(data)
}
/** Drops the socket to the server, as a network drop does. */
window.dropSocket = () => window.peer.socket._socket.close()
