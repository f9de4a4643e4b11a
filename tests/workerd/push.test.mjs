// The relay's push transport in workerd: WebSocket upgrades on /relay/v1
// handed to the room's Durable Object (SQLite-backed, hibernation API),
// frames as in wire/relay/socket.rs: join, push, ack, resume after a drop,
// leaves and closes, refusals at the upgrade and on bad frames.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join as joinPath } from 'node:path'
import WebSocket from 'ws'
import { connectSocket, startWorker } from './harness.mjs'

let worker

before(async () => { worker = await startWorker() })
after(async () => { await worker?.stop() })

/** A socket on a relay room (see `connectSocket`). */
function connect (base, room, headers = {}) {
  return connectSocket(base, `/relay/v1?room=${room}`, headers)
}

async function join (room, name, base = worker.url) {
  const c = connect(base, room)
  await c.opened
  c.send({ meta: { name } })
  c.welcome = await c.next()
  c.id = c.welcome.id
  return c
}

test('members join, get each other\'s messages pushed, and see joins and leaves', async () => {
  const ann = await join('push-room-1', 'ann')
  assert.deepEqual(ann.welcome.peers, [])
  assert.ok(ann.welcome.token.length >= 32)
  const bob = await join('push-room-1', 'bob')
  assert.deepEqual(bob.welcome.peers, [{ id: ann.id, meta: { name: 'ann' } }])
  assert.deepEqual(await ann.next(), { joined: { id: bob.id, meta: { name: 'bob' } } })

  const started = performance.now()
  ann.send({ send: [{ to: bob.id, seq: 1, data: { type: 'offer', sdp: 'v=0' } }] })
  assert.deepEqual(await bob.next(), { messages: [{ from: ann.id, seq: 1, data: { type: 'offer', sdp: 'v=0' } }] })
  const pushedMs = performance.now() - started
  assert.deepEqual(await ann.next(), { ack: 1 })
  bob.send({ send: [{ to: '*', seq: 1, data: 'hi all' }] })
  assert.deepEqual(await ann.next(), { messages: [{ from: bob.id, seq: 1, data: 'hi all' }] })
  assert.deepEqual(await bob.next(), { ack: 1 })
  console.log(`# workerd: a message pushed to its addressee in ${pushedMs.toFixed(1)} ms`)

  bob.send({ leave: true })
  assert.equal((await bob.closed).code, 1000)
  assert.deepEqual(await ann.next(), { left: bob.id })
  ann.ws.close(1000)
  await ann.closed
})

test('members joining at once: each socket hears its welcome first, and every join before its messages', async () => {
  // Pushes leave before the room's write is confirmed; a welcome (or ack)
  // waits for it, and whatever else is meant for that socket waits behind it.
  const room = `push-burst-${Date.now()}`
  const N = 12
  const members = await Promise.all(Array.from({ length: N }, async (_, i) => {
    const c = connect(worker.url, room)
    await c.opened
    c.send({ meta: { i } })
    return c
  }))
  const views = await Promise.all(members.map(async c => {
    const first = await c.next()
    assert.ok(first.id && Array.isArray(first.peers), `the first frame is the welcome: ${JSON.stringify(first)}`)
    c.id = first.id
    c.send({ send: [{ to: '*', seq: 1, data: `from ${first.id}` }] })
    const known = new Set(first.peers.map(p => p.id))
    let acked = false
    while (!acked || known.size < N - 1) {
      const f = await c.next()
      if (f.joined) known.add(f.joined.id)
      if (f.ack !== undefined) acked = true
      for (const m of f.messages || []) assert.ok(known.has(m.from), `a message from ${m.from} came before its join`)
    }
    return known
  }))
  for (const [i, known] of views.entries()) {
    assert.deepEqual([...known].sort(), members.filter((_, j) => j !== i).map(c => c.id).sort())
  }
  for (const c of members) c.ws.close()
})

test('a dropped socket resumes with its token and cursors and misses nothing', async () => {
  const ann = await join('push-room-2', 'ann')
  const bob = await join('push-room-2', 'bob')
  await ann.next() // bob joined
  ann.send({ send: [{ to: bob.id, seq: 1, data: 'one' }] })
  assert.equal((await bob.next()).messages[0].seq, 1)
  await ann.next() // ack
  bob.ws.terminate() // no close frame: a network drop
  await bob.closed
  ann.send({ send: [{ to: bob.id, seq: 2, data: 'two' }, { to: bob.id, seq: 3, data: 'three' }] })
  assert.deepEqual(await ann.next(), { ack: 3 })
  const back = connect(worker.url, 'push-room-2')
  await back.opened
  back.send({ id: bob.id, token: bob.welcome.token, after: { [ann.id]: 1 } })
  const welcome = await back.next()
  assert.equal(welcome.id, bob.id)
  assert.equal(welcome.token, undefined)
  assert.deepEqual(welcome.peers.map(p => p.id), [ann.id])
  assert.deepEqual((await back.next()).messages.map(m => m.data), ['two', 'three'])
  assert.equal(ann.pending(), 0, 'a drop and a resume are not a leave and a join')
  // A tab that closes (1001) leaves at once.
  back.ws.close(1001)
  assert.deepEqual(await ann.next(), { left: bob.id })
  ann.ws.close()
  await ann.closed
})

test('refusals: at the upgrade with a status, on a bad frame with a close code', async () => {
  await assert.rejects(connect(worker.url, 'no').opened, e => e.status === 400 && /Bad room id/.test(e.body))
  const elsewhere = new WebSocket(worker.url.replace(/^http/, 'ws') + '/other?room=push-room-3')
  await new Promise(resolve => elsewhere.on('unexpected-response', (_, res) => { assert.equal(res.statusCode, 400); resolve() }))

  const cases = [
    ['not json', 4400, 'Bad JSON'],
    [JSON.stringify({ send: [{ to: '*', seq: 1, data: 1 }] }), 4400, 'A join sends no messages and does not leave'],
    [JSON.stringify({ id: 'nobody', token: 'nothing' }), 4410, 'This session left the room; a new session can join'],
    ['x'.repeat(70 * 1024), 4413, 'Frame too large']
  ]
  for (const [frame, code, reason] of cases) {
    const c = connect(worker.url, 'push-room-3')
    await c.opened
    c.send(frame)
    assert.deepEqual(await c.closed, { code, reason }, frame.slice(0, 40))
  }
  const bin = connect(worker.url, 'push-room-3')
  await bin.opened
  bin.ws.send(Buffer.from([1, 2, 3]))
  assert.deepEqual(await bin.closed, { code: 1003, reason: 'Binary frames are not taken' })

  // A refused batch keeps the socket open.
  const ann = await join('push-room-3', 'ann')
  const bob = await join('push-room-3', 'bob')
  ann.send({ send: [{ to: bob.id, seq: 5, data: 'a' }] })
  ann.send({ send: [{ to: bob.id, seq: 5, data: 'b' }] })
  await ann.next() // bob joined
  assert.deepEqual(await ann.next(), { ack: 5 })
  const refused = await ann.next()
  assert.equal(refused.refused, 5)
  assert.equal(refused.status, 409)
  ann.send('ping')
  assert.equal(await ann.next(), 'pong')
  for (const c of [ann, bob]) { c.ws.close(); await c.closed }
})

test('the upgrade follows the deployment\'s rules: origins, signed rooms, no binding', async () => {
  const strict = await startWorker({ vars: { ALLOWED_ORIGINS: 'https://app.example', ORIGIN_QUOTA: '0', ROOM_SECRET: 'push-secret' } })
  const plain = await startWorker({ push: false })
  try {
    await assert.rejects(connect(strict.url, 'push-room-4', { Origin: 'https://evil.example' }).opened, e => e.status === 401)
    await assert.rejects(connect(strict.url, 'push-room-4', { Origin: 'https://app.example' }).opened,
      e => e.status === 403 && /not signed/.test(e.body))
    await assert.rejects(connect(plain.url, 'push-room-4').opened,
      e => e.status === 501 && /RELAY_ROOMS/.test(e.body))
    // The status page says which host serves relay rooms.
    assert.match(await (await fetch(plain.url)).text(), /<dd id="relay">in R2, HTTP polling only/)
    assert.match(await (await fetch(worker.url)).text(), /<dd id="relay">pushed over WebSockets, one Durable Object per room \(<code>RELAY_ROOMS<\/code>\), at most 256 members/)
    // The other clients served, by the bindings there are.
    assert.match(await (await fetch(worker.url)).text(), /<dd id="sockets">y-webrtc at <code>\/y-webrtc\/&lt;namespace&gt;<\/code>; PeerJS at <code>path: "\/peerjs"<\/code><\/dd>/)
    assert.match(await (await fetch(plain.url)).text(), /<dd id="sockets">no y-webrtc \(no <code>TOPIC_ROOMS<\/code> binding\); no PeerJS \(no <code>PEER_ROOMS<\/code> binding\)<\/dd>/)
  } finally {
    await strict.stop()
    await plain.stop()
  }
})

test('a restart (a deploy) in mid-conversation: members resume from the stored rows and lose nothing', async () => {
  const dir = mkdtempSync(joinPath(tmpdir(), 'p2pcf-push-'))
  let first = await startWorker({ persist: dir })
  try {
    const ann = await join('push-room-5', 'ann', first.url)
    const bob = await join('push-room-5', 'bob', first.url)
    await ann.next() // bob joined
    ann.send({ send: [{ to: bob.id, seq: 1, data: 'one' }] })
    assert.equal((await bob.next()).messages[0].data, 'one')
    await ann.next() // ack
    bob.ws.terminate()
    await bob.closed
    ann.send({ send: [{ to: bob.id, seq: 2, data: 'two' }] })
    assert.deepEqual(await ann.next(), { ack: 2 })
    await first.stop() // every socket goes, the storage stays
    await ann.closed
    first = await startWorker({ persist: dir })
    const annBack = connect(first.url, 'push-room-5')
    await annBack.opened
    annBack.send({ id: ann.id, token: ann.welcome.token })
    assert.deepEqual((await annBack.next()).peers.map(p => p.id), [bob.id])
    const bobBack = connect(first.url, 'push-room-5')
    await bobBack.opened
    bobBack.send({ id: bob.id, token: bob.welcome.token, after: { [ann.id]: 1 } })
    assert.equal((await bobBack.next()).id, bob.id)
    assert.deepEqual(await bobBack.next(), { messages: [{ from: ann.id, seq: 2, data: 'two' }] })
    annBack.send({ send: [{ to: bob.id, seq: 3, data: 'three' }] })
    assert.deepEqual(await bobBack.next(), { messages: [{ from: ann.id, seq: 3, data: 'three' }] })
    for (const c of [annBack, bobBack]) { c.ws.close(); await c.closed }
  } finally {
    await first.stop()
    rmSync(dir, { recursive: true, force: true })
  }
})

test('a client that polls (POST /relay/v1) and one on a WebSocket meet in one room, on its object', async () => {
  const post = async body => {
    const res = await fetch(worker.url + '/relay/v1', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) })
    return { status: res.status, headers: res.headers, json: res.status === 200 ? await res.json() : await res.text() }
  }
  const ann = await join('push-room-6', 'ann')
  const bob = await post({ room: 'push-room-6', meta: { name: 'bob' } })
  assert.equal(bob.status, 200)
  assert.equal(bob.headers.get('x-r2-ops'), 'A=0 B=0', 'the room lives on its object, not in R2')
  assert.deepEqual(bob.json.peers, [{ id: ann.id, meta: { name: 'ann' } }])
  const { id, token } = bob.json
  assert.deepEqual(await ann.next(), { joined: { id, meta: { name: 'bob' } } })
  // Poller -> socket: pushed at once.
  const sent = await post({ room: 'push-room-6', id, token, send: [{ to: ann.id, seq: 1, data: 'from bob' }] })
  assert.equal(sent.status, 200)
  assert.match(sent.headers.get('x-poll-hint'), /^(fast|slow|idle); ms=\d+$/)
  assert.deepEqual(await ann.next(), { messages: [{ from: id, seq: 1, data: 'from bob' }] })
  // Socket -> poller: taken with the next poll, by its cursor, once.
  ann.send({ send: [{ to: id, seq: 1, data: 'from ann' }] })
  assert.deepEqual(await ann.next(), { ack: 1 })
  const polled = await post({ room: 'push-room-6', id, token, after: {} })
  assert.deepEqual(polled.json.messages, [{ from: ann.id, seq: 1, data: 'from ann' }])
  const again = await post({ room: 'push-room-6', id, token, after: { [ann.id]: 1 } })
  assert.deepEqual(again.json.messages, [])
  // Refusals keep their status, text and CORS.
  const reused = await post({ room: 'push-room-6', id, token, send: [{ to: ann.id, seq: 1, data: 'other' }] })
  assert.equal(reused.status, 409)
  assert.equal(reused.headers.get('access-control-allow-origin'), '*')
  assert.match(reused.json, /seq already used/)
  const wrong = await post({ room: 'push-room-6', id, token: 'x'.repeat(32) })
  assert.deepEqual([wrong.status, wrong.json], [400, 'Bad token'])
  // The poller leaves: the socket hears it at once.
  assert.equal((await post({ room: 'push-room-6', id, token, leave: true })).status, 200)
  assert.deepEqual(await ann.next(), { left: id })
  assert.equal((await post({ room: 'push-room-6', id, token })).status, 410)
  ann.ws.close()
  await ann.closed
})

test('a silent socket (a crashed tab, a dead network) is closed and its member gone after its window; a pinging one stays', async () => {
  const quick = await startWorker({ vars: { SOCKET_IDLE_S: '1', RESUME_WINDOW_S: '1' } })
  try {
    const silent = await join('push-room-7', 'silent', quick.url)
    const alive = await join('push-room-7', 'alive', quick.url)
    const pinger = setInterval(() => alive.send('ping'), 300)
    const started = performance.now()
    try {
      assert.deepEqual(await silent.next().catch(() => null), { joined: { id: alive.id, meta: { name: 'alive' } } })
      const closed = await silent.closed
      const closedMs = performance.now() - started
      assert.equal(closed.code, 4408)
      let frame
      do frame = await alive.next(); while (frame === 'pong')
      const leftMs = performance.now() - started
      assert.deepEqual(frame, { left: silent.id })
      console.log(`# workerd: a silent socket closed after ${(closedMs / 1000).toFixed(1)} s (SOCKET_IDLE_S=1), its member gone for the others after ${(leftMs / 1000).toFixed(1)} s (RESUME_WINDOW_S=1)`)
      assert.equal(alive.ws.readyState, WebSocket.OPEN, 'the pinging socket stays')
    } finally {
      clearInterval(pinger)
    }
    alive.ws.close()
    await alive.closed
  } finally {
    await quick.stop()
  }
})
