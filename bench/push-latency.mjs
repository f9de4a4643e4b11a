// The pushed relay's own latency, with no browser on the machine: a member
// connecting (socket open to welcome) and a 2 KB signal from send to its
// addressee, through the built worker in workerd (miniflare: the room's
// Durable Object, SQLite) and through the Node WebSocket relay the browser
// timing compares with, taking turns. Prints medians and p99 for
// BENCHMARKS.md.
//
//   bash scripts/build-worker.sh && node bench/push-latency.mjs [rounds]
import WebSocket from 'ws'
import { startWorker } from '../tests/workerd/harness.mjs'
import { startWebSocketRelay } from '../tests/browser/ws-relay.mjs'

const ROUNDS = Number(process.argv[2] || 200)
const worker = await startWorker()
const node = await startWebSocketRelay()
const nodeUrl = `ws://127.0.0.1:${node.address().port}`
const sdp = 'v=0 ' + 'a'.repeat(2000)
const now = () => performance.now()
const pct = (xs, p) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]

/** A socket whose frames are awaited by predicate. */
async function open (url) {
  const ws = new WebSocket(url)
  const frames = []
  let wake = null
  ws.on('message', m => { frames.push(JSON.parse(m)); wake?.() })
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject) })
  ws.next = async pred => {
    for (;;) {
      const i = frames.findIndex(pred)
      if (i >= 0) return frames.splice(i, 1)[0]
      await new Promise(resolve => { wake = resolve })
    }
  }
  return ws
}

/** One member of `room` on a server, welcomed: [socket, id]. */
const servers = {
  worker: {
    async connect (room) {
      const ws = await open(`${worker.url.replace(/^http/, 'ws')}/relay/v1?room=${room}`)
      ws.send(JSON.stringify({ meta: null }))
      return [ws, (await ws.next(f => f.id && f.peers)).id]
    },
    joined: f => f.joined,
    send: (ws, to, seq) => ws.send(JSON.stringify({ send: [{ to, seq, data: { type: 'offer', sdp } }] })),
    got: f => f.messages
  },
  node: {
    async connect (room) {
      const ws = await open(`${nodeUrl}/?room=${room}`)
      return [ws, (await ws.next(f => f.type === 'welcome')).id]
    },
    joined: f => f.type === 'join',
    send: (ws, to) => ws.send(JSON.stringify({ to, data: { type: 'offer', sdp } })),
    got: f => f.type === 'signal'
  }
}

const times = { worker: { connect: [], push: [] }, node: { connect: [], push: [] } }
for (let round = -20; round < ROUNDS; round++) {
  for (const [name, server] of Object.entries(servers)) {
    const room = `latency-${name}-${round}-${Date.now()}`
    const [a, aId] = await server.connect(room)
    let t = now()
    const [b] = await server.connect(room)
    const connected = now() - t
    await a.next(server.joined)
    t = now()
    server.send(b, aId, 1)
    await a.next(server.got)
    const pushed = now() - t
    if (round >= 0) { times[name].connect.push(connected); times[name].push.push(pushed) }
    a.close()
    b.close()
  }
}
const fmt = xs => `${pct(xs, 0.5).toFixed(1)} / ${pct(xs, 0.99).toFixed(1)} ms`
console.log(`pushed relay latency, ${ROUNDS} rounds (median / p99), no browser running:`)
console.log('| | worker relay, pushed (Durable Object) | Node WebSocket relay |')
console.log('|---|---:|---:|')
console.log(`| a member connects (socket open to welcome) | ${fmt(times.worker.connect)} | ${fmt(times.node.connect)} |`)
console.log(`| a 2 KB signal, send to its addressee | ${fmt(times.worker.push)} | ${fmt(times.node.push)} |`)
await worker.stop()
node.close()
