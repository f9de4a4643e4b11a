// The fast-rtc-swarm test page: @mattkrick/fast-rtc-swarm 0.4.1 from npm,
// signalled through client/relay.js with client/fast-rtc-swarm.js.
import swarmModule from '@mattkrick/fast-rtc-swarm'
import { SignalRelay } from 'p2pcf-rs-client/relay'
import { swarmOverRelay } from 'p2pcf-rs-client/fast-rtc-swarm'

// A webpack CommonJS build: the class is its `default` export.
const FastRTCSwarm = swarmModule.default || swarmModule
const params = new URLSearchParams(location.search)
const events = (window.events = [])
const received = (window.received = [])

const relay = new SignalRelay({ url: params.get('worker'), room: params.get('room') })
window.relay = relay
relay.on('error', err => events.push(['relay-error', String(err)]))
relay.on('join', id => events.push(['relay-join', id]))
relay.on('leave', id => events.push(['relay-leave', id]))
relay.start().then(() => {
  // Loopback: no STUN (fast-rtc-peer's default list has a URL Chromium now refuses).
  const swarm = new FastRTCSwarm({ userId: relay.id, rtcConfig: { iceServers: [] } })
  swarmOverRelay(swarm, relay)
  window.swarm = swarm
  swarm.on('open', peer => events.push(['open', peer.id, peer.userId]))
  swarm.on('close', peer => events.push(['close', peer.id]))
  swarm.on('data', data => received.push(String(data)))
  swarm.on('error', err => events.push(['error', String(err)]))
  events.push(['started', relay.id])
})
