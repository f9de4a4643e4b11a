// client/relay.js (and the Peer Message adapter on it) against the built
// worker, from Node: joins seen by both sides, 200 messages each way in
// order and once, the Peer Message `signal` shape, and a leave.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { startWorker } from './harness.mjs'
import { SignalRelay } from 'p2pcf-rs-client/relay'
import { peerMessageSignal } from 'p2pcf-rs-client/peer-message'

// Both hosts of a relay room: R2 (no RELAY_ROOMS binding) and the room's
// object, polled; and the object over WebSockets (`push`: Node 20 has no
// global WebSocket, so SignalRelay is given the `ws` package's).
const hosts = {}
before(async () => {
  hosts.r2 = await startWorker({ push: false })
  hosts.object = await startWorker()
  hosts.push = hosts.object
})

/** A `ws` socket that drops (no close frame) after every `every`th frame it sends. */
function droppingSocket (every) {
  let sent = 0
  return class Dropping extends WebSocket {
    static opened = 0
    constructor (...args) {
      super(...args)
      Dropping.opened++
    }

    send (data) {
      super.send(data)
      if (++sent % every === 0) setTimeout(() => this.terminate(), 0)
    }
  }
}
after(async () => { for (const w of new Set(Object.values(hosts))) await w.stop() })

const until = async (what, fn, ms = 20000) => {
  const start = Date.now()
  while (!(await fn())) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

for (const host of ['r2', 'object', 'push']) {
  test(`[${host}] two SignalRelays: join events, ordered exactly-once messages, Peer Message shape, leave`, async () => {
    const worker = hosts[host]
    const room = `relay-client-${Date.now()}`
    const push = host === 'push' ? { transport: 'push', WebSocket } : {}
    const ann = new SignalRelay({ url: worker.url, room, meta: { name: 'ann' }, ...push })
    const bob = new SignalRelay({ url: worker.url, room, meta: { name: 'bob' }, ...push })
    const seen = { ann: [], bob: [] }
    const joins = { ann: [], bob: [] }
    const leaves = []
    ann.on('signal', (from, data) => seen.ann.push([from, data]))
    bob.on('signal', (from, data) => seen.bob.push([from, data]))
    ann.on('join', (id, meta) => joins.ann.push([id, meta]))
    bob.on('join', (id, meta) => joins.bob.push([id, meta]))
    ann.on('leave', id => leaves.push(id))
    // A failure must not leave the two polling forever (the test file would never end).
    try {
      await ann.start()
      await bob.start()
      assert.deepEqual(joins.bob, [[ann.id, { name: 'ann' }]], 'peers already there are joins too')
      await until('ann sees bob', () => joins.ann.length === 1)
      assert.deepEqual(joins.ann, [[bob.id, { name: 'bob' }]])

      // 200 messages each way, sent without waiting (batched by the client).
      const sends = []
      for (let i = 0; i < 200; i++) {
        sends.push(ann.send(bob.id, { i }))
        sends.push(bob.send(ann.id, { i }))
      }
      await Promise.all(sends)
      await until('all delivered', () => seen.ann.length === 200 && seen.bob.length === 200)
      assert.deepEqual(seen.bob.map(([from, d]) => [from, d.i]), Array.from({ length: 200 }, (_, i) => [ann.id, i]))
      assert.deepEqual(seen.ann.map(([, d]) => d.i), Array.from({ length: 200 }, (_, i) => i))

      // Peer Message's `signal: { channel, send, receive }`, strings both ways.
      const a = peerMessageSignal(ann, bob.id)
      const b = peerMessageSignal(bob, ann.id)
      const got = []
      b.receive(message => got.push(message))
      assert.equal(typeof a.channel, 'string')
      a.send('{"type":"offer"}')
      a.send('{"candidate":"x"}')
      await until('peer message strings', () => got.length === 2)
      assert.deepEqual(got, ['{"type":"offer"}', '{"candidate":"x"}'])

      // bob leaves: ann sees it at her next poll.
      bob.stop()
      await until('ann sees bob leave', () => leaves.includes(bob.id), 30000)
      assert.equal(ann.peers.size, 0)
    } finally {
      ann.stop()
      bob.stop()
    }
  })

  test(`[${host}] SignalRelay under network errors, lost answers and 503s: 300 messages, in order, once`, async () => {
    const worker = hosts[host]
    const room = `relay-flaky-${Date.now()}`
    // Every 5th request fails before it leaves, every 7th loses its answer
    // after the worker handled it, every 9th gets a 503 with Retry-After.
    let n = 0
    const flaky = async (url, init) => {
      n++
      if (n % 5 === 0) throw new TypeError('network down')
      if (n % 9 === 0) return new Response('Storage busy', { status: 503, headers: { 'Retry-After': '1' } })
      const res = await fetch(url, init)
      if (n % 7 === 0) throw new TypeError('answer lost')
      return res
    }
    // Over push: each socket drops after every 3rd frame it sends (and
    // comes back with its cursors), with polling under the same failures
    // should it fall back.
    const push = host === 'push' ? { WebSocket: droppingSocket(3) } : {}
    const ann = new SignalRelay({ url: worker.url, room, fetch: flaky, ...push })
    const bob = new SignalRelay({ url: worker.url, room, fetch: flaky, ...push })
    // A failure must not leave the two polling forever (the test file would never end).
    try {
      const got = []
      bob.on('signal', (from, data) => got.push(data))
      await ann.start()
      await bob.start()
      await until('ann sees bob', () => ann.peers.has(bob.id))
      const sends = []
      for (let i = 0; i < 300; i++) sends.push(ann.send(bob.id, i))
      await Promise.all(sends)
      await until('all 300', () => got.length >= 300, 60000)
      await new Promise(resolve => setTimeout(resolve, 1500))
      assert.deepEqual(got, Array.from({ length: 300 }, (_, i) => i))
      if (push.WebSocket) {
        assert.ok(push.WebSocket.opened > 4, `sockets were dropped and reopened (${push.WebSocket.opened} opened)`)
        assert.ok(ann._ws && bob._ws, 'both still on push, not polling')
      }
    } finally {
      ann.stop()
      bob.stop()
    }
  })
}
