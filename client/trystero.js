// Trystero on a p2pcf-rs worker: a Trystero strategy built with
// @trystero-p2p/core's createTopicStrategy whose relay is the worker's
// topic signalling (the y-webrtc protocol at /y-webrtc/<namespace>: one
// Durable Object per namespace, publish/subscribe, ping). Trystero does the
// rest as with any strategy: it announces on the room's topic, sends each
// peer its offers, answers and candidates on that peer's topic, encrypted
// with a key from the appId, room id and `password`, so the worker only
// ever relays ciphertext under hashed topic names.
//
//   import { joinRoom } from 'p2pcf-rs-client/trystero'
//   const room = joinRoom({ appId: 'my-app', workerUrl: 'https://<worker>' }, 'lobby')
import { createRelayManager, createTopicStrategy, makeSocket, selfId, toJson } from '@trystero-p2p/core'

/** How long a socket may be quiet before it pings (the worker closes sockets silent for 75 s). */
const PING_MS = 20000
const VALID_NAMESPACE = /^[A-Za-z0-9_-]{4,64}$/

/**
 * The worker's namespace for `config`: `config.namespace` if given (for
 * example a signed room id), else the appId when it is a valid room id,
 * else a hash of it.
 */
async function namespaceOf (config) {
  const name = config.namespace ?? config.appId
  if (VALID_NAMESPACE.test(name)) return name
  if (config.namespace) throw new Error(`p2pcf-rs trystero: bad namespace "${name}": 4-64 of [A-Za-z0-9_-]`)
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(name))
  return 'trystero-' + [...new Uint8Array(digest)].slice(0, 16).map(b => b.toString(16).padStart(2, '0')).join('')
}

function socketUrl (workerUrl, namespace) {
  if (!workerUrl) throw new Error('p2pcf-rs trystero: config.workerUrl is required (https://<your-worker>)')
  return `${String(workerUrl).replace(/\/+$/, '').replace(/^http/, 'ws')}/y-webrtc/${namespace}`
}

/** One relay per socket URL: topics subscribed, their handlers, the last announcement per topic. */
const relayManager = createRelayManager(relay => relay.client.socket)

function connect (url) {
  const relay = { handlers: {}, refs: {}, announcements: {}, lastSent: 0 }
  const send = frame => {
    relay.lastSent = Date.now()
    relay.client.send(JSON.stringify(frame))
  }
  relay.send = send
  relay.client = makeSocket(url, text => {
    let frame
    try { frame = JSON.parse(text) } catch { return }
    if (frame?.type === 'publish' && typeof frame.topic === 'string') relay.handlers[frame.topic]?.(frame.topic, frame.data)
  }, () => {
    // A new socket: the worker kept nothing, so subscribe and announce again.
    const topics = Object.keys(relay.refs)
    if (topics.length) send({ type: 'subscribe', topics })
    for (const [topic, data] of Object.entries(relay.announcements)) send({ type: 'publish', topic, data })
  })
  relay.timer = setInterval(() => {
    if (Date.now() - relay.lastSent >= PING_MS) send({ type: 'ping' })
  }, PING_MS / 2)
  return relay
}

export const joinRoom = createTopicStrategy({
  init: config => namespaceOf(config).then(namespace => {
    const url = socketUrl(config.workerUrl, namespace)
    const relay = relayManager.register(url, () => connect(url))
    return relay.client.ready.then(() => relay)
  }),
  subscribeTopic: (relay, topic, onMessage) => {
    const handler = (t, data) => onMessage(t, data)
    relay.handlers[topic] = handler
    relay.refs[topic] = (relay.refs[topic] ?? 0) + 1
    if (relay.refs[topic] === 1) relay.send({ type: 'subscribe', topics: [topic] })
    return () => {
      relay.refs[topic] = Math.max(0, (relay.refs[topic] ?? 1) - 1)
      if (relay.refs[topic] === 0) {
        relay.send({ type: 'unsubscribe', topics: [topic] })
        delete relay.refs[topic]
        delete relay.announcements[topic]
      }
      if (relay.handlers[topic] === handler) delete relay.handlers[topic]
    }
  },
  publishTopic: (relay, topic, msg, { kind }) => {
    const data = typeof msg === 'string' ? msg : toJson(msg)
    if (kind === 'announce') relay.announcements[topic] = data
    relay.send({ type: 'publish', topic, data })
  }
})

/** The worker sockets in use, by URL (as Trystero's other strategies offer). */
export const getRelaySockets = relayManager.getSockets

export { selfId }
