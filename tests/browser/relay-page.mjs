// The relay test page: a simple-peer full mesh signalled through
// client/relay.js, exactly as README.md shows it. simple-peer 9.11.1 comes
// from its own browser bundle (window.SimplePeer).
import { SignalRelay } from '../../client/relay.js'

const params = new URLSearchParams(location.search)
const events = (window.events = [])
const received = (window.received = [])
const t0 = performance.now()

const relay = new SignalRelay({ url: params.get('worker'), room: params.get('room'), meta: { name: params.get('name') } })
const peers = new Map()

function connect (id, initiator) {
  const peer = new window.SimplePeer({ initiator, trickle: true })
  peer.on('signal', data => relay.send(id, data))
  peer.on('connect', () => events.push(['connect', id, Math.round(performance.now() - t0)]))
  peer.on('data', data => received.push([id, String(data)]))
  peer.on('close', () => events.push(['close', id]))
  peer.on('error', err => events.push(['error', id, String(err)]))
  peers.set(id, peer)
  return peer
}

// The peer with the larger id starts each connection.
relay.on('join', id => { if (relay.id > id && !peers.has(id)) connect(id, true) })
relay.on('signal', (from, data) => (peers.get(from) || connect(from, false)).signal(data))
relay.on('leave', id => { events.push(['leave', id]); peers.get(id)?.destroy(); peers.delete(id) })
relay.on('error', err => events.push(['relay-error', String(err)]))

window.relay = relay
window.sendAll = text => { for (const p of peers.values()) if (p.connected) p.send(text) }
relay.start().then(() => events.push(['started', relay.id]))
