// PeerJS in real Chromium, unchanged: two pages create a `Peer` with the
// worker's /peerjs as their server (`path: "/peerjs"`), get their ids from
// it, and `connect()` opens a data connection each way that a message
// crosses; a page whose socket drops reconnects with its id and is reached
// again. Side by side in the same run: time to `open` and to the data
// connection opening, through the worker and through PeerJS's own server
// (`peer` 1.0.2) on loopback.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startWorker } from '../workerd/harness.mjs'
import { startPeerServer } from './peer-server.mjs'
import { startBrowser, until } from './support.mjs'

let worker, chromium, peerServer

before(async () => {
  worker = await startWorker()
  chromium = await startBrowser()
  peerServer = await startPeerServer()
})

after(async () => {
  await chromium?.stop()
  await worker?.stop()
  peerServer?.stop()
})

const workerServer = () => ({ host: '127.0.0.1', port: new URL(worker.url).port, path: '/peerjs' })
const ownServer = () => ({ host: '127.0.0.1', port: String(peerServer.port), path: '/peerjs' })

/** A page with a Peer on `server`, started; resolves with its id once open. */
async function openPeer (server, name, id) {
  const p = await chromium.openClient({ ...server, name, ...(id ? { id } : {}) }, '/peerjs-client')
  await p.page.evaluate(() => window.begin())
  p.id = await until(`${name} open`, () => event(p, 'open').then(e => e?.[1]), 20000)
  return p
}

const events = p => p.page.evaluate(() => window.events)
const event = async (p, kind, ...args) =>
  (await events(p)).filter(e => e[0] === kind && args.every((a, i) => e[i + 1] === a)).pop()

test('two PeerJS pages get ids from the worker and connect() both ways; a message crosses each', async () => {
  const a = await openPeer(workerServer(), 'a')
  const b = await openPeer(workerServer(), 'b')
  try {
    assert.match(a.id, /^[0-9a-f-]{36}$/, 'an id from GET /peerjs/peerjs/id')
    await a.page.evaluate(id => window.connectTo(id), b.id)
    await until('a -> b open', () => event(a, 'conn-open', b.id), 20000)
    await a.page.evaluate(id => window.send(id, 'hi from a'), b.id)
    await until('b got it', () => event(b, 'data', a.id, 'hi from a'), 20000)
    // The other way: a second connection, opened by b.
    await b.page.evaluate(id => window.connectTo(id), a.id)
    await until('b -> a open', async () => (await events(b)).filter(e => e[0] === 'conn-open').length >= 2, 20000)
    await b.page.evaluate(id => window.send(id, 'hi from b'), a.id)
    await until('a got it', () => event(a, 'data', b.id, 'hi from b'), 20000)
    for (const p of [a, b]) assert.equal(await event(p, 'error'), undefined, JSON.stringify(await events(p)))
  } finally {
    for (const p of [a, b]) await p.context.close()
  }
})

test('a page whose socket drops reconnects with its id (no ID-TAKEN) and is reached again', async () => {
  const a = await openPeer(workerServer(), 'a', `alice-${Date.now()}`)
  const b = await openPeer(workerServer(), 'b')
  try {
    await a.page.evaluate(() => window.dropSocket())
    await until('a open again', async () => (await events(a)).filter(e => e[0] === 'open').length === 2, 20000)
    const errors = (await events(a)).filter(e => e[0] === 'error').map(e => e[1])
    assert.deepEqual(errors, ['network'], 'only the drop itself: no unavailable-id')
    await b.page.evaluate(id => window.connectTo(id), a.id)
    await until('b -> a open', () => event(b, 'conn-open', a.id), 20000)
    await b.page.evaluate(id => window.send(id, 'after the drop'), a.id)
    await until('a got it', () => event(a, 'data', b.id, 'after the drop'), 20000)
    // A connect to an id nobody holds: PeerJS reports the peer unavailable (EXPIRE).
    await b.page.evaluate(() => window.connectTo('nobody-here'))
    await until('peer-unavailable', () => event(b, 'error', 'peer-unavailable'), 20000)
  } finally {
    for (const p of [a, b]) await p.context.close()
  }
})

test('time to open and to a data connection: the worker next to PeerJS\'s own server', async () => {
  // Pages loaded, then left 300 ms before the clock starts (a fresh
  // context is still busy); a warm-up round per server; servers take
  // turns; medians of five rounds.
  const ROUNDS = 5
  const servers = { worker: workerServer(), 'peer 1.0.2': ownServer() }
  /** ms from begin() to `open` (an id fetched, the socket open) and from connect() to the connection's `open`. */
  async function timeOne (server) {
    const a = await chromium.openClient({ ...server, name: 'a' }, '/peerjs-client')
    const b = await openPeer(server, 'b')
    try {
      await new Promise(resolve => setTimeout(resolve, 300))
      await a.page.evaluate(() => window.begin())
      const opened = await until('a open', () => event(a, 'open'), 20000)
      const startedAt = await a.page.evaluate(() => window.startedAt)
      await a.page.evaluate(id => window.connectTo(id), b.id)
      const conn = await until('a -> b open', () => event(a, 'conn-open', b.id), 20000)
      const asked = await event(a, 'connect', b.id)
      return { open: opened[2] - startedAt, connect: conn[2] - asked[2] }
    } finally {
      for (const p of [a, b]) await p.context.close()
    }
  }
  for (const server of Object.values(servers)) await timeOne(server)
  const runs = {}
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, server] of Object.entries(servers)) (runs[name] ||= []).push(await timeOne(server))
  }
  const median = xs => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const medians = {}
  for (const [name, rs] of Object.entries(runs)) {
    medians[name] = { open: median(rs.map(r => r.open)), connect: median(rs.map(r => r.connect)) }
    console.log(`PeerJS through ${name === 'worker' ? 'the worker' : "PeerJS's own server (peer 1.0.2)"}: open ${medians[name].open} ms, data connection open ${medians[name].connect} ms (medians; runs ${rs.map(r => `${r.open}/${r.connect}`).join(', ')})`)
  }
  for (const what of ['open', 'connect']) {
    console.log(`PeerJS ${what}: worker / peer 1.0.2 = ${(medians.worker[what] / Math.max(1, medians['peer 1.0.2'][what])).toFixed(2)}`)
  }
  assert.equal(Object.values(runs).flat().length, ROUNDS * 2)
})
