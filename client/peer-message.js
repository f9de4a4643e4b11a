// Peer Message adapter: Peer Message takes `signal: { channel, send, receive }`
// (strings in, strings out) for one pair of peers. This builds that object
// on a SignalRelay, so a Peer Message pair signals through the worker.
//
//   const relay = await new SignalRelay({ url, room }).start()
//   relay.on('join', peerId => {
//     const pm = new PeerMessage({ signal: peerMessageSignal(relay, peerId) })
//   })

/** The `signal` option of Peer Message for the link to `peerId`. */
export function peerMessageSignal (relay, peerId, channel = 'peer-message') {
  return {
    channel,
    send: message => {
      relay.send(peerId, { channel, message: String(message) }).catch(() => {})
    },
    receive: update => {
      relay.on('signal', (from, data) => {
        if (from === peerId && data && data.channel === channel) update(data.message)
      })
    }
  }
}
