// The test page's script: runs the stock p2pcf client, unchanged (bundled
// from node_modules/p2pcf/src with esbuild), and records what it sees.
import P2PCF from 'p2pcf'
import { followHints } from 'p2pcf-rs-client/hints'
import { useTurnCredentials } from 'p2pcf-rs-client/turn'

const params = new URLSearchParams(location.search)
const log = (window.p2pcfLog = [])
const received = (window.received = [])

// `turn=1`: relay-only ICE with the worker's TURN credentials (the TURN test).
const relayOnly = params.get('turn') === '1'
const client = new P2PCF(params.get('client'), params.get('room'), {
  workerUrl: params.get('worker'),
  // Loopback: host candidates only, no STUN/TURN servers to reach.
  stunIceServers: [],
  turnIceServers: [],
  rtcPeerConnectionOptions: relayOnly ? { iceTransportPolicy: 'relay' } : {}
})
window.client = client
if (params.get('hints') === '1') {
  const fetchBefore = window.fetch
  window.hints = followHints(client)
  window.hintsLeftFetchAlone = window.fetch === fetchBefore
}
const turn = relayOnly ? useTurnCredentials(client, params.get('worker')) : null
window.turnCredentials = () => turn?.last()

/** Each connected peer's selected pair: candidate types ("relay", "host", ...) and the remote port. */
window.selectedCandidateTypes = async () => {
  const types = []
  for (const peer of client.peers.values()) {
    const stats = await peer._pc.getStats()
    let pair = null
    stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId) })
    if (!pair) stats.forEach(s => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s })
    const local = pair && stats.get(pair.localCandidateId)
    const remote = pair && stats.get(pair.remoteCandidateId)
    types.push({ local: local?.candidateType ?? null, remote: remote?.candidateType ?? null, remotePort: remote?.port ?? null })
  }
  return types
}

/** Relay candidates Chromium gathers with `iceServers` (relay-only); a refused credential gathers none. */
window.relayCandidates = async iceServers => {
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay' })
  pc.createDataChannel('probe')
  const found = []
  const done = new Promise(resolve => {
    setTimeout(resolve, 8000)
    pc.onicecandidate = e => { if (!e.candidate) resolve(); else if (/ typ relay /.test(e.candidate.candidate)) found.push(e.candidate.candidate) }
  })
  await pc.setLocalDescription(await pc.createOffer())
  await done
  pc.close()
  return found.length
}

// Counts signalling requests (the test's own wrapper; the hints helper adds none).
window.requests = 0
window.requestTimes = []
const countedFetch = window.fetch
window.fetch = (input, init) => {
  if ((typeof input === 'string' ? input : input?.url) === client.workerUrl) {
    window.requests++
    window.requestTimes.push(Date.now())
  }
  return countedFetch(input, init)
}

client.on('peerconnect', peer => log.push(['peerconnect', peer.id, peer.client_id]))
client.on('peerclose', peer => log.push(['peerclose', peer.id]))
client.on('msg', (peer, data) => {
  const bytes = new Uint8Array(data)
  let sum = 0
  for (const b of bytes) sum = (sum * 31 + b) >>> 0
  received.push({ from: peer.id, length: bytes.length, checksum: sum, text: bytes.length < 256 ? new TextDecoder().decode(bytes) : null })
})

/** Sends `text`, or `length` pseudo-random bytes, to every connected peer; returns the checksum. */
window.sendToAll = ({ text, length }) => {
  let bytes
  if (text !== undefined) {
    bytes = new TextEncoder().encode(text)
  } else {
    bytes = new Uint8Array(length)
    for (let i = 0; i < length; i++) bytes[i] = (i * 7 + 13) & 0xff
  }
  let sum = 0
  for (const b of bytes) sum = (sum * 31 + b) >>> 0
  for (const peer of client.peers.values()) client.send(peer, bytes)
  return sum
}

if (turn) {
  turn.ready.then(() => client.start()).then(() => log.push(['started', client.sessionId]), err => log.push(['error', String(err)]))
} else {
  client.start().then(() => log.push(['started', client.sessionId]))
}
