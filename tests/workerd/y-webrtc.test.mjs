// y-webrtc's signalling in workerd: WebSocket upgrades on
// /y-webrtc/<namespace> handed to the namespace's Durable Object
// (TopicRoom), frames as y-webrtc's own bin/server.js takes them:
// subscribe, unsubscribe, publish (to every subscriber, the sender's
// included, with `clients`), ping/pong; refusals at the upgrade and on bad
// frames.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { connectSocket, startWorker } from './harness.mjs'

let worker

before(async () => { worker = await startWorker() })
after(async () => { await worker?.stop() })

const connect = connectSocket

async function subscriber (path, topics) {
  const c = connect(worker.url, path)
  await c.opened
  c.send({ type: 'subscribe', topics })
  return c
}

/** Publishes and waits until `probe` got it: frames are in order per socket. */
async function settle (c) {
  c.send({ type: 'ping' })
  assert.deepEqual(await c.next(), { type: 'pong' })
}

test('a publish reaches every subscriber of its topic in the namespace, the sender included, with the count', async () => {
  const ann = await subscriber('/y-webrtc/yjs-app', ['doc-1', 42, 'doc-2'])
  const bob = await subscriber('/y-webrtc/yjs-app', ['doc-1'])
  const cat = await subscriber('/y-webrtc/yjs-app', ['doc-2'])
  const far = await subscriber('/y-webrtc/other-app', ['doc-1'])
  for (const c of [ann, bob, cat, far]) await settle(c)

  const announce = { type: 'announce', from: 'peer-ann' }
  ann.send({ type: 'publish', topic: 'doc-1', data: announce })
  const expected = { type: 'publish', topic: 'doc-1', data: announce, clients: 2 }
  assert.deepEqual(await ann.next(), expected)
  assert.deepEqual(await bob.next(), expected)
  // An encrypted signal (y-webrtc with a password) is a string: as it came.
  bob.send({ type: 'publish', topic: 'doc-2', data: 'c2VjcmV0' })
  assert.deepEqual(await ann.next(), { type: 'publish', topic: 'doc-2', data: 'c2VjcmV0', clients: 2 })
  assert.deepEqual(await cat.next(), { type: 'publish', topic: 'doc-2', data: 'c2VjcmV0', clients: 2 })
  for (const c of [ann, bob, cat, far]) await settle(c)
  assert.equal(bob.pending() + far.pending(), 0, 'nothing for a topic not subscribed, nor in another namespace')

  bob.send({ type: 'unsubscribe', topics: ['doc-1'] })
  await settle(bob)
  ann.send({ type: 'publish', topic: 'doc-1', data: 1 })
  assert.deepEqual(await ann.next(), { type: 'publish', topic: 'doc-1', data: 1, clients: 1 })
  // A closed socket's subscriptions go with it.
  bob.send({ type: 'subscribe', topics: ['doc-1'] })
  ann.ws.close()
  await ann.closed
  await settle(bob)
  bob.send({ type: 'publish', topic: 'doc-1', data: 2 })
  assert.deepEqual(await bob.next(), { type: 'publish', topic: 'doc-1', data: 2, clients: 1 })
  // Frames of another type are ignored, as by y-webrtc's server.
  bob.send({ type: 'hello' })
  await settle(bob)
  assert.equal(bob.pending(), 0)
  for (const c of [bob, cat, far]) { c.ws.close(); await c.closed }
})

test('bad frames close the socket with a code and a reason; the others go on', async () => {
  const path = '/y-webrtc/yjs-bad'
  const calm = await subscriber(path, ['t'])
  const many = Array.from({ length: 65 }, (_, i) => `t${i}`)
  const cases = [
    ['not json', 4400, 'Bad JSON'],
    ['[1, 2]', 4400, 'Bad frame: expected a JSON object'],
    [JSON.stringify({ type: 'subscribe', topics: [''] }), 4400, 'Bad topic: 1 to 256 bytes'],
    [JSON.stringify({ type: 'publish', topic: 'a\u0001b', data: 1 }), 4400, 'Bad topic: no control characters'],
    [JSON.stringify({ type: 'subscribe', topics: many }), 4413, 'Too many topics for one socket'],
    [JSON.stringify({ type: 'publish', topic: 't', data: 'x'.repeat(70 * 1024) }), 4413, 'Frame too large']
  ]
  for (const [frame, code, reason] of cases) {
    const c = connect(worker.url, path)
    await c.opened
    c.send(frame)
    assert.deepEqual(await c.closed, { code, reason }, frame.slice(0, 40))
  }
  const bin = connect(worker.url, path)
  await bin.opened
  bin.ws.send(Buffer.from([0xff, 0xfe, 0x00]))
  assert.deepEqual(await bin.closed, { code: 4400, reason: 'Frames are JSON text' })
  // JSON in a binary frame is taken, as y-webrtc's server takes it.
  const binary = connect(worker.url, path)
  await binary.opened
  binary.ws.send(Buffer.from(JSON.stringify({ type: 'subscribe', topics: ['t'] })))
  await settle(binary)
  // A flood: the frame past 200 in 10 s closes the socket.
  const flood = connect(worker.url, path)
  await flood.opened
  for (let i = 0; i < 201; i++) flood.send({ type: 'unsubscribe', topics: ['none'] })
  assert.deepEqual(await flood.closed, { code: 4429, reason: 'Too many frames: at most 200 or 512 KiB per 10 s per socket' })

  calm.send({ type: 'publish', topic: 't', data: 'still here' })
  assert.deepEqual(await calm.next(), { type: 'publish', topic: 't', data: 'still here', clients: 2 })
  for (const c of [calm, binary]) { c.ws.close(); await c.closed }
})

test('the upgrade follows the deployment\'s rules: origins, namespace ids, no binding', async () => {
  const strict = await startWorker({ vars: { ALLOWED_ORIGINS: 'https://app.example', ORIGIN_QUOTA: '0' } })
  const plain = await startWorker({ push: false })
  try {
    await assert.rejects(connect(strict.url, '/y-webrtc/yjs-app', { Origin: 'https://evil.example' }).opened, e => e.status === 401)
    const allowed = connect(strict.url, '/y-webrtc/yjs-app', { Origin: 'https://app.example' })
    await allowed.opened
    allowed.ws.close()
    await assert.rejects(connect(worker.url, '/y-webrtc/a/b').opened, e => e.status === 400 && /Bad room id/.test(e.body))
    await assert.rejects(connect(plain.url, '/y-webrtc').opened,
      e => e.status === 501 && /TOPIC_ROOMS/.test(e.body))
    // `/y-webrtc` alone is the namespace `default`.
    const a = await subscriber('/y-webrtc', ['x'])
    const b = await subscriber('/y-webrtc/default', ['x'])
    await settle(a)
    await settle(b)
    a.send({ type: 'publish', topic: 'x', data: 0 })
    assert.equal((await b.next()).clients, 2)
    for (const c of [a, b]) { c.ws.close(); await c.closed }
  } finally {
    await strict.stop()
    await plain.stop()
  }
})

test('a silent socket (a crashed tab, a dead network) is closed and its subscriptions go; a pinging one and one that is sent frames stay', async () => {
  const quick = await startWorker({ vars: { SOCKET_IDLE_S: '1' } })
  const open = async topics => {
    const c = connect(quick.url, '/y-webrtc/yjs-idle')
    await c.opened
    c.send({ type: 'subscribe', topics })
    return c
  }
  try {
    const silent = await open(['t'])
    const pinging = await open(['t'])
    const listening = await open(['u'])
    const talker = await open(['u'])
    const timers = [
      setInterval(() => pinging.send({ type: 'ping' }), 300),
      // The listener only receives (as a y-webrtc client in a busy room, which then never pings).
      setInterval(() => talker.send({ type: 'publish', topic: 'u', data: 'tick' }), 300)
    ]
    try {
      const started = performance.now()
      const closed = await silent.closed
      assert.equal(closed.code, 4408)
      console.log(`# workerd: a silent y-webrtc socket closed after ${((performance.now() - started) / 1000).toFixed(1)} s (SOCKET_IDLE_S=1)`)
      await new Promise(resolve => setTimeout(resolve, 2500))
      for (const c of [pinging, listening, talker]) assert.equal(c.ws.readyState, 1, 'still open')
    } finally {
      timers.forEach(clearInterval)
    }
    // The closed socket's subscription went with it.
    pinging.send({ type: 'publish', topic: 't', data: 0 })
    let frame
    do frame = await pinging.next(); while (frame.type === 'pong')
    assert.deepEqual(frame, { type: 'publish', topic: 't', data: 0, clients: 1 })
    for (const c of [pinging, listening, talker]) { c.ws.close(); await c.closed }
  } finally {
    await quick.stop()
  }
})
