// fast-rtc-swarm over SignalRelay: the library's server side, done by each
// member for its own offers, so a swarm needs no signalling server.
//
// fast-rtc-swarm's server keeps one offer "chunk" (an offer and its ICE
// candidates) per member, hands it to the next member who joins (`accept`),
// asks the owner for a new one (`offerRequest`), tells it who took it
// (`offerAccepted`) and forwards the answer and candidates both ways. Here
// each member holds its own chunks: when a peer with a larger id joins, it
// sends that peer its ready chunk through the relay and makes a new one; a
// pair thus uses exactly one offer (the smaller id's), and everything after
// the `accept` goes straight to the other member.
//
//   const relay = await new SignalRelay({ url, room }).start()
//   const swarm = new FastRTCSwarm({ userId: relay.id })
//   swarmOverRelay(swarm, relay)   // right after creating the swarm

export function swarmOverRelay (swarm, relay) {
  const chunks = new Map() // our offer id -> signals gathered before it is taken
  const ready = [] // our offer ids with an offer, not yet taken
  const waiting = [] // peers waiting for one of our offers
  const links = new Map() // connection id -> the other member's peer id
  const offered = new Set() // peers we offered (or will offer) to: one offer per pair
  const send = (to, payload) => relay.send(to, payload).catch(() => {})

  const offer = to => {
    if (offered.has(to)) return
    offered.add(to)
    hand(to)
  }

  const hand = to => {
    const id = ready.shift()
    if (!id) { waiting.push(to); return }
    links.set(id, to)
    send(to, { type: 'accept', id, userId: relay.id, signals: chunks.get(id) })
    chunks.delete(id)
    swarm.dispatch({ type: 'offerRequest' }) // a fresh offer for the next one
  }

  swarm.on('signal', ({ id, ...signal }) => {
    if (signal.type === 'init') return
    if (signal.type === 'close') { relay.stop(); return }
    const to = links.get(id)
    if (to) { send(to, { id, ...signal }); return }
    // One of our offers, still ours: gather it until someone takes it.
    if (!chunks.has(id)) chunks.set(id, [])
    chunks.get(id).push(signal)
    if (signal.type === 'offer') {
      ready.push(id)
      if (waiting.length) hand(waiting.shift())
    }
  })
  relay.on('join', peerId => { if (relay.id < peerId) offer(peerId) })
  // Peers that joined before the swarm existed (start() announced them).
  for (const peerId of relay.peers.keys()) if (relay.id < peerId) offer(peerId)
  relay.on('signal', (from, payload) => {
    if (!payload || typeof payload.type !== 'string') return
    if (payload.type === 'accept') links.set(payload.id, from)
    if (payload.type === 'answer') swarm.dispatch({ type: 'offerAccepted', id: payload.id, userId: from })
    swarm.dispatch(payload)
  })
  relay.on('leave', peerId => {
    offered.delete(peerId)
    for (const [id, member] of links) {
      if (member !== peerId) continue
      links.delete(id)
      swarm.dispatch({ type: 'leaveSwarm', id })
    }
    const w = waiting.indexOf(peerId)
    if (w >= 0) waiting.splice(w, 1)
  })
  return swarm
}
