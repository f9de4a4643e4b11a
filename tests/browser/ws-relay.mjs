// The baseline the relay is measured against: a plain WebSocket signalling
// relay on 127.0.0.1, as these apps run today (welcome with the peers on
// connect, joins and leaves to everyone, a signal to its addressee).
import { randomBytes } from 'node:crypto'
import { WebSocketServer } from 'ws'

/** Starts it on a free port; resolves to the `ws` server. */
export async function startWebSocketRelay () {
  const rooms = new Map()
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await new Promise(resolve => server.on('listening', resolve))
  server.on('connection', (socket, req) => {
    const room = new URL(req.url, 'http://x').searchParams.get('room')
    const members = rooms.get(room) || new Map()
    rooms.set(room, members)
    const id = randomBytes(8).toString('hex')
    socket.send(JSON.stringify({ type: 'welcome', id, peers: [...members.keys()] }))
    for (const other of members.values()) other.send(JSON.stringify({ type: 'join', id }))
    members.set(id, socket)
    socket.on('message', raw => {
      const { to, data } = JSON.parse(raw)
      members.get(to)?.send(JSON.stringify({ type: 'signal', from: id, data }))
    })
    socket.on('close', () => {
      members.delete(id)
      for (const other of members.values()) other.send(JSON.stringify({ type: 'leave', id }))
    })
  })
  return server
}
