// Compiled by the test command (`tsc -p tests/client`, no output): the
// package's declarations resolve through its `exports` map, and typical use
// of every helper type-checks under `strict`.
import P2PCF from 'p2pcf'
import { SignalRelay, followHints as followFromIndex } from 'p2pcf-rs-client'
import type { Json, RelayError } from 'p2pcf-rs-client/relay'
import { fetchTurnCredentials, useTurnCredentials } from 'p2pcf-rs-client/turn'
import { followHints } from 'p2pcf-rs-client/hints'
import { peerMessageSignal } from 'p2pcf-rs-client/peer-message'
import { swarmOverRelay, type FastRTCSwarmLike } from 'p2pcf-rs-client/fast-rtc-swarm'
import { signRoom } from 'p2pcf-rs-client/sign-room'
import { joinRoom, selfId } from 'p2pcf-rs-client/trystero'

export async function example (workerUrl: string): Promise<void> {
  const relay = new SignalRelay({ url: workerUrl, room: 'my-room', meta: { name: 'ann' } })
  relay.on('join', (id: string, meta: Json) => console.log(id, meta))
  relay.on('signal', (from: string, data: Json) => console.log(from, data))
  relay.on('error', (err: RelayError) => console.log(err.status, err.retry))
  await relay.start()
  await relay.send('peer', { type: 'offer', sdp: '...' })
  const signal = peerMessageSignal(relay, 'peer')
  signal.receive((message: string) => signal.send(message))

  const like: FastRTCSwarmLike = { on: () => undefined, dispatch: () => undefined }
  const swarm = swarmOverRelay(like, relay)
  swarm.dispatch({ type: 'offerRequest' })

  const credentials = await fetchTurnCredentials(workerUrl)
  const servers: RTCIceServer[] = credentials.iceServers
  const p2pcf = new P2PCF('client', 'room-id', { workerUrl, turnIceServers: servers })
  const signed: string = await signRoom('room-id', 'secret', { expiresInS: 3600 })

  const room = joinRoom({ appId: 'my-app', workerUrl, password: 'secret' }, 'lobby')
  const chat = room.makeAction<string>('chat')
  chat.onMessage = (text: string, { peerId }) => console.log(text, peerId, selfId)
  room.onPeerJoin = (peerId: string) => { void chat.send('hi', { target: peerId }) }
  room.onPeerLeave = (peerId: string) => console.log(peerId)
  await fetchTurnCredentials(workerUrl, { room: signed })
  const turn = useTurnCredentials(p2pcf, workerUrl, { allPeers: false, room: signed })
  await turn.ready
  const hints = followHints(p2pcf)
  const mode: 'fast' | 'slow' | 'idle' | undefined = hints.last?.mode
  console.log(mode, hints.received, followFromIndex === followHints)
  hints.stop()
  turn.stop()
  relay.stop()
}
