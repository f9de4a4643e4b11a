// The relay test page: a simple-peer full mesh signalled through
// client/relay.js, exactly as README.md shows it. simple-peer 9.11.1 comes
// from its own browser bundle (window.SimplePeer).
import { SignalRelay } from 'p2pcf-rs-client/relay'

const params = new URLSearchParams(location.search)
const events = (window.events = [])
const received = (window.received = [])
const t0 = performance.now()

// `transport=ws`: the same page over a plain WebSocket relay (the baseline
// these apps use today), for the timing comparison.
class WsRelay {
  constructor ({ url, room }) {
    this.url = `${url}/?room=${encodeURIComponent(room)}`
    this.id = null
    this.handlers = {}
  }

  on (event, fn) { (this.handlers[event] ||= []).push(fn); return this }
  emit (event, ...args) { for (const fn of this.handlers[event] || []) fn(...args) }
  send (to, data) { this.socket.send(JSON.stringify({ to, data })); return Promise.resolve() }
  stop () { this.socket.close() }
  start () {
    this.socket = new WebSocket(this.url)
    return new Promise(resolve => {
      this.socket.onmessage = e => {
        const m = JSON.parse(e.data)
        if (m.type === 'welcome') { this.id = m.id; for (const p of m.peers) this.emit('join', p); resolve(this) }
        if (m.type === 'join') this.emit('join', m.id)
        if (m.type === 'leave') this.emit('leave', m.id)
        if (m.type === 'signal') this.emit('signal', m.from, m.data)
      }
    })
  }
}

const relay = params.get('transport') === 'ws'
  ? new WsRelay({ url: params.get('ws'), room: params.get('room') })
  : new SignalRelay({
    url: params.get('worker'),
    room: params.get('room'),
    meta: { name: params.get('name') },
    // `transport=poll`: HTTP polling only (the timing's other baseline).
    transport: params.get('transport') === 'poll' ? 'poll' : 'auto'
  })
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
/** Starts the relay; `startedAt` is ms after the page's start, `t0Wall` that start on the wall clock. */
window.begin = () => {
  window.startedAt = Math.round(performance.now() - t0)
  relay.start().then(() => events.push(['started', relay.id, Math.round(performance.now() - t0)]))
}
window.t0Wall = performance.timeOrigin + t0
// `defer=1`: the test calls begin() on every page at once (the timing).
if (!params.get('defer')) window.begin()
