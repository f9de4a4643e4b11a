// The Trystero test page: a standard Trystero room joined either through
// the worker (p2pcf-rs-client/trystero, `workerUrl`) or through Trystero's
// own MQTT strategy (@trystero-p2p/mqtt, `broker`), no STUN (pages on
// loopback connect with host candidates). The test calls begin() and
// send(); joins, leaves and messages are noted in `events` with ms since
// the page loaded.
import { joinRoom as joinThroughWorker } from 'p2pcf-rs-client/trystero'
import { joinRoom as joinThroughMqtt } from '@trystero-p2p/mqtt'

const params = new URLSearchParams(location.search)
const t0 = performance.now()
const at = () => Math.round(performance.now() - t0)
const events = (window.events = [])
const note = (...e) => events.push([...e, at()])
window.t0Wall = performance.timeOrigin + t0

window.begin = () => {
  window.startedAt = at()
  const config = {
    appId: params.get('app'),
    password: params.get('password') || undefined,
    rtcConfig: { iceServers: [] }
  }
  const room = params.get('broker')
    ? joinThroughMqtt({ ...config, relayConfig: { urls: [params.get('broker')], redundancy: 1 } }, params.get('room'))
    : joinThroughWorker({ ...config, workerUrl: params.get('worker') }, params.get('room'))
  room.onPeerJoin = id => note('join', id)
  room.onPeerLeave = id => note('leave', id)
  const chat = room.makeAction('chat')
  chat.onMessage = (data, { peerId }) => note('data', peerId, data.length, data.slice(0, 32))
  window.room = room
  window.chat = chat
}
window.selfId = () => import('p2pcf-rs-client/trystero').then(m => m.selfId)
/** Sends `size` characters starting with `text` to `target` (every peer if none). */
window.send = (text, size, target) => window.chat.send(text.padEnd(size, '.'), target ? { target } : undefined)
window.peers = () => Object.keys(window.room.getPeers()).sort()
