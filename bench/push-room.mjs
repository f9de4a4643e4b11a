// A pushed relay room of hundreds, on the built worker in workerd
// (miniflare: the room's Durable Object, SQLite, local): N WebSocket members
// (Node `ws` clients on loopback) join one room; every member must see
// every other; broadcasts are timed to every receiver (p50/p99); then
// addressed messages between random pairs, each checked delivered once and
// in order. Prints the figures for BENCHMARKS.md.
//
//   bash scripts/build-worker.sh && node bench/push-room.mjs [members] [messages]
import WebSocket from 'ws'
import { startWorker } from '../tests/workerd/harness.mjs'

const MEMBERS = Number(process.argv[2] || 256)
const MESSAGES = Number(process.argv[3] || 10000)
const BROADCASTS = 20

const worker = await startWorker({ vars: { MAX_LIVE_MEMBERS: String(Math.max(256, MEMBERS)) } })
const room = `push-bench-${Date.now()}`
const url = `${worker.url.replace(/^http/, 'ws')}/relay/v1?room=${room}`
const percentile = (xs, p) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]

/** A member: its socket, who it sees, what it got (per sender, in order). */
function member (i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    const m = { ws, peers: new Set(), got: new Map(), onBroadcast: null, acks: 0, seq: 0 }
    ws.on('open', () => ws.send(JSON.stringify({ meta: { i } })))
    ws.on('message', data => {
      const f = JSON.parse(data.toString())
      if (f.id && f.peers) {
        m.id = f.id
        for (const p of f.peers) m.peers.add(p.id)
        return resolve(m)
      }
      if (f.joined) m.peers.add(f.joined.id)
      if (f.left) m.peers.delete(f.left)
      if (f.ack !== undefined) m.acks++
      if (f.refused !== undefined) m.refused = f
      for (const msg of f.messages || []) {
        if (msg.data?.b !== undefined) m.onBroadcast?.(msg)
        else {
          if (!m.got.has(msg.from)) m.got.set(msg.from, [])
          m.got.get(msg.from).push(msg.seq)
        }
      }
    })
    ws.on('error', reject)
    ws.on('close', code => { if (!m.id) reject(new Error(`closed ${code}`)) })
  })
}

const until = async (what, fn, ms = 120000) => {
  const start = Date.now()
  while (!fn()) {
    if (Date.now() - start > ms) throw new Error(`timed out: ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

try {
  const started = performance.now()
  const members = []
  for (let i = 0; i < MEMBERS; i += 16) {
    members.push(...await Promise.all(Array.from({ length: Math.min(16, MEMBERS - i) }, (_, j) => member(i + j))))
  }
  await until('everyone sees everyone', () => members.every(m => m.peers.size === MEMBERS - 1))
  const joinedMs = performance.now() - started
  console.log(`${MEMBERS} members joined one room, each seeing the ${MEMBERS - 1} others, in ${(joinedMs / 1000).toFixed(1)} s`)

  // Broadcasts: each timed from send to arrival at every other member.
  const latencies = []
  for (let b = 0; b < BROADCASTS; b++) {
    const sender = members[(b * 37) % MEMBERS]
    let arrived = 0
    const sentAt = performance.now()
    for (const m of members) {
      if (m === sender) continue
      m.onBroadcast = () => { latencies.push(performance.now() - sentAt); arrived++ }
    }
    sender.ws.send(JSON.stringify({ send: [{ to: '*', seq: ++sender.seq, data: { b } }] }))
    await until(`broadcast ${b}`, () => arrived === MEMBERS - 1)
  }
  console.log(`broadcast to ${MEMBERS - 1} members: p50 ${percentile(latencies, 0.5).toFixed(1)} ms, p99 ${percentile(latencies, 0.99).toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms (${BROADCASTS} broadcasts)`)

  // Addressed messages between random pairs, in frames of up to 10.
  let seed = 7
  const rand = n => { seed = (seed * 1103515245 + 12345) % 2147483648; return (seed >>> 15) % n }
  const expected = new Map() // "to from" -> seqs
  const frames = new Map(members.map(m => [m, []]))
  for (let k = 0; k < MESSAGES; k++) {
    const from = members[rand(MEMBERS)]
    let to = members[rand(MEMBERS)]
    if (to === from) to = members[(members.indexOf(from) + 1) % MEMBERS]
    const seq = ++from.seq
    const key = `${to.id} ${from.id}`
    if (!expected.has(key)) expected.set(key, [])
    expected.get(key).push(seq)
    const batch = frames.get(from)
    if (!batch.length || batch[batch.length - 1].length === 10) batch.push([])
    batch[batch.length - 1].push({ to: to.id, seq, data: { k } })
  }
  const acksBefore = members.reduce((n, m) => n + m.acks, 0)
  const totalFrames = [...frames.values()].reduce((n, f) => n + f.length, 0)
  const sendStarted = performance.now()
  for (const [m, list] of frames) for (const send of list) m.ws.send(JSON.stringify({ send }))
  await until('every frame acked', () => members.reduce((n, m) => n + m.acks, 0) - acksBefore === totalFrames || members.some(m => m.refused))
  const refused = members.find(m => m.refused)?.refused
  await until('every message delivered', () => members.reduce((n, m) => n + [...m.got.values()].reduce((a, s) => a + s.length, 0), 0) >= MESSAGES || refused)
  const sendMs = performance.now() - sendStarted
  let lost = 0
  let duplicated = 0
  let disordered = 0
  for (const [key, seqs] of expected) {
    const [to, from] = key.split(' ')
    const got = members.find(m => m.id === to).got.get(from) || []
    lost += seqs.filter(s => !got.includes(s)).length
    duplicated += got.length - new Set(got).size
    if (got.some((s, i) => i > 0 && s <= got[i - 1])) disordered++
  }
  console.log(`${MESSAGES} addressed messages in ${totalFrames} frames: delivered in ${(sendMs / 1000).toFixed(1)} s (${Math.round(MESSAGES / (sendMs / 1000))} messages/s), ${lost} lost, ${duplicated} duplicated, ${disordered} pairs out of order${refused ? `; refused: ${JSON.stringify(refused)}` : ''}`)
  for (const m of members) m.ws.close(1000)
} finally {
  await worker.stop()
}
