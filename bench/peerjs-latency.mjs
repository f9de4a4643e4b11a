// PeerJS signalling's own latency, with no browser on the machine, through
// the built worker in workerd (the worker's GET id, the key's Durable
// Object) and through PeerJS's own server (`peer` 1.0.2), taking turns: a
// fresh id (`GET /peerjs/<key>/id`), a socket from connect to `OPEN`, and a
// 2 KB OFFER from send to its addressee. Prints medians and p99 for
// BENCHMARKS.md.
//
//   bash scripts/build-worker.sh && node bench/peerjs-latency.mjs [rounds]
import WebSocket from 'ws'
import { startWorker } from '../tests/workerd/harness.mjs'
import { startPeerServer } from '../tests/browser/peer-server.mjs'

const ROUNDS = Number(process.argv[2] || 200)
const worker = await startWorker()
const own = await startPeerServer()
const bases = { worker: worker.url, 'peer 1.0.2': `http://127.0.0.1:${own.port}` }
const payload = { sdp: { type: 'offer', sdp: 'v=0 ' + 'a'.repeat(2000) }, type: 'data', connectionId: 'dc_x' }
const now = () => performance.now()
const pct = (xs, p) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]

/** A PeerJS socket with `id`, once it has its first frame (OPEN). */
async function open (base, id) {
  const url = `${base.replace(/^http/, 'ws')}/peerjs/peerjs?key=peerjs&id=${id}&token=t${id}&version=1.5.5`
  const ws = new WebSocket(url)
  const frames = []
  let wake = null
  ws.on('message', m => { frames.push(JSON.parse(m)); wake?.() })
  ws.next = async () => {
    while (!frames.length) await new Promise(resolve => { wake = resolve })
    return frames.shift()
  }
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject) })
  const first = await ws.next()
  if (first.type !== 'OPEN') throw new Error(JSON.stringify(first))
  return ws
}

const times = Object.fromEntries(Object.keys(bases).map(n => [n, { id: [], open: [], signal: [] }]))
for (let round = -20; round < ROUNDS; round++) {
  for (const [name, base] of Object.entries(bases)) {
    let t = now()
    const id = await (await fetch(`${base}/peerjs/peerjs/id?ts=${Date.now()}${Math.random()}`)).text()
    const gotId = now() - t
    t = now()
    const a = await open(base, id)
    const opened = now() - t
    const b = await open(base, `b${round + 100}x${Date.now()}`)
    t = now()
    b.send(JSON.stringify({ type: 'OFFER', dst: id, payload }))
    const got = await a.next()
    const signal = now() - t
    if (got.type !== 'OFFER') throw new Error(JSON.stringify(got).slice(0, 100))
    if (round >= 0) { times[name].id.push(gotId); times[name].open.push(opened); times[name].signal.push(signal) }
    a.close()
    b.close()
  }
}
const fmt = xs => `${pct(xs, 0.5).toFixed(1)} / ${pct(xs, 0.99).toFixed(1)} ms`
const [w, p] = Object.values(times)
console.log(`PeerJS signalling latency, ${ROUNDS} rounds (median / p99), no browser running:`)
console.log('| | worker (Durable Object per key) | PeerJS server (peer 1.0.2) |')
console.log('|---|---:|---:|')
console.log(`| a fresh id (GET /peerjs/<key>/id) | ${fmt(w.id)} | ${fmt(p.id)} |`)
console.log(`| a socket, connect to OPEN | ${fmt(w.open)} | ${fmt(p.open)} |`)
console.log(`| a 2 KB OFFER, send to its addressee | ${fmt(w.signal)} | ${fmt(p.signal)} |`)
await worker.stop()
own.stop()
