// PeerJS's signalling in workerd: `GET /peerjs/<key>/id` answered by the
// worker, WebSocket upgrades on /peerjs/peerjs?key&id&token handed to the
// key's Durable Object (PeerRoom), frames as PeerJS's own server (`peer`
// 1.0.2) takes them: OPEN, signals routed by `dst` with `src` set by the
// server, signals held for an absent id then EXPIRE, ID-TAKEN, a reconnect
// with the same token, HEARTBEAT answered by the runtime; refusals at the
// connect and on bad frames.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { connectSocket, startWorker } from './harness.mjs'

let worker

before(async () => { worker = await startWorker() })
after(async () => { await worker?.stop() })

const socketPath = (key, id, token) =>
  `/peerjs/peerjs?key=${key}&id=${encodeURIComponent(id)}&token=${token}&version=1.5.5`

async function peer (key, id, token = `t-${id}`, base = worker.url) {
  const c = connectSocket(base, socketPath(key, id, token))
  await c.opened
  return c
}

/** A heartbeat's answer: every frame sent before it has been handled. */
async function settle (c) {
  c.send({ type: 'HEARTBEAT' })
  assert.deepEqual(await c.next(), { type: 'HEARTBEAT' })
}

test('GET /peerjs/<key>/id gives a fresh id with CORS; the peer list is not given out', async () => {
  const ids = new Set()
  for (const path of ['/peerjs/id', '/peerjs/app-1/id', '/peerjs/app-1/id']) {
    const res = await fetch(`${worker.url}${path}?ts=1${Math.random()}&version=1.5.5`, { headers: { Origin: 'https://app.example' } })
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('access-control-allow-origin'), '*')
    const id = await res.text()
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    ids.add(id)
  }
  assert.equal(ids.size, 3)
  const peers = await fetch(`${worker.url}/peerjs/app-1/peers`)
  assert.equal(peers.status, 403)
  const bad = await fetch(`${worker.url}/peerjs/ab/id`)
  assert.equal(bad.status, 400)
  assert.equal(await bad.text(), 'Invalid key provided')
})

test('signals reach the id they are addressed to, with the sender\'s id; keys are apart', async () => {
  const ann = await peer('app-1', 'ann')
  const bob = await peer('app-1', 'bob smith')
  const far = await peer('app-2', 'bob smith')
  for (const c of [ann, bob, far]) assert.deepEqual(await c.next(), { type: 'OPEN' })

  const payload = { sdp: { type: 'offer', sdp: 'v=0' }, type: 'data', connectionId: 'dc_1', serialization: 'binary', reliable: true }
  ann.send({ type: 'OFFER', src: 'forged', dst: 'bob smith', payload })
  assert.deepEqual(await bob.next(), { type: 'OFFER', src: 'ann', dst: 'bob smith', payload })
  bob.send({ type: 'ANSWER', dst: 'ann', payload: { sdp: 'a', connectionId: 'dc_1' } })
  bob.send({ type: 'CANDIDATE', dst: 'ann', payload: { candidate: 'c', connectionId: 'dc_1' } })
  assert.deepEqual(await ann.next(), { type: 'ANSWER', src: 'bob smith', dst: 'ann', payload: { sdp: 'a', connectionId: 'dc_1' } })
  assert.deepEqual(await ann.next(), { type: 'CANDIDATE', src: 'bob smith', dst: 'ann', payload: { candidate: 'c', connectionId: 'dc_1' } })
  // Heartbeats are answered by the runtime; other types are ignored.
  ann.send({ type: 'HELLO', dst: 'bob smith' })
  for (const c of [ann, bob, far]) await settle(c)
  assert.equal(far.pending() + bob.pending(), 0, 'nothing crossed to the other key')
  for (const c of [ann, bob, far]) { c.ws.close(); await c.closed }
})

test('a signal for an id nobody holds waits for it, then its sender hears EXPIRE once', async () => {
  const ann = await peer('app-hold', 'ann')
  assert.deepEqual(await ann.next(), { type: 'OPEN' })
  ann.send({ type: 'OFFER', dst: 'late', payload: { connectionId: 'dc_1', n: 1 } })
  ann.send({ type: 'CANDIDATE', dst: 'late', payload: { connectionId: 'dc_1', n: 2 } })
  await settle(ann)
  const late = await peer('app-hold', 'late')
  assert.deepEqual(await late.next(), { type: 'OPEN' })
  assert.deepEqual(await late.next(), { type: 'OFFER', src: 'ann', dst: 'late', payload: { connectionId: 'dc_1', n: 1 } })
  assert.deepEqual(await late.next(), { type: 'CANDIDATE', src: 'ann', dst: 'late', payload: { connectionId: 'dc_1', n: 2 } })

  const sent = performance.now()
  ann.send({ type: 'OFFER', dst: 'never', payload: { connectionId: 'dc_2' } })
  ann.send({ type: 'CANDIDATE', dst: 'never', payload: { connectionId: 'dc_2' } })
  assert.deepEqual(await ann.next(9000), { type: 'EXPIRE', src: 'never', dst: 'ann' })
  const waited = performance.now() - sent
  console.log(`# workerd: a PeerJS signal for an absent id expired after ${(waited / 1000).toFixed(1)} s`)
  assert.ok(waited >= 4900 && waited < 8000, `${waited} ms`)
  await settle(ann)
  assert.equal(ann.pending(), 0, 'one EXPIRE for the pair')
  for (const c of [ann, late]) { c.ws.close(); await c.closed }
})

test('an id held by another token is ID-TAKEN; the same token takes it back (a reconnect after a drop)', async () => {
  const first = await peer('app-ids', 'ann', 'secret1')
  assert.deepEqual(await first.next(), { type: 'OPEN' })
  const thief = await peer('app-ids', 'ann', 'guess')
  assert.deepEqual(await thief.next(), { type: 'ID-TAKEN', payload: { msg: 'ID is taken' } })
  assert.deepEqual(await thief.closed, { code: 4409, reason: 'ID is taken' })
  // The old socket has not closed yet (a dropped network): the token wins.
  const again = await peer('app-ids', 'ann', 'secret1')
  assert.deepEqual(await again.next(), { type: 'OPEN' })
  assert.equal((await first.closed).code, 4409)
  const bob = await peer('app-ids', 'bob')
  await bob.next()
  bob.send({ type: 'OFFER', dst: 'ann', payload: { n: 1 } })
  assert.deepEqual(await again.next(), { type: 'OFFER', src: 'bob', dst: 'ann', payload: { n: 1 } })
  // Once its socket closes, the id is free for anyone.
  again.ws.close()
  await again.closed
  const other = await peer('app-ids', 'ann', 'new-token')
  assert.deepEqual(await other.next(), { type: 'OPEN' })
  for (const c of [bob, other]) { c.ws.close(); await c.closed }
})

test('bad connects get an ERROR frame; bad frames close the socket with a code and a reason', async () => {
  const refused = async (path, base = worker.url, headers = {}) => {
    const c = connectSocket(base, path, headers)
    await c.opened
    return { frame: await c.next(), closed: await c.closed }
  }
  const error = msg => ({ type: 'ERROR', payload: { msg } })
  assert.deepEqual(await refused('/peerjs/peerjs?key=peerjs&id=a'), {
    frame: error('No id, token, or key supplied to websocket server'),
    closed: { code: 4400, reason: 'No id, token, or key supplied to websocket server' }
  })
  assert.deepEqual((await refused('/peerjs/peerjs?key=ab&id=a&token=t')).frame, error('Invalid key provided'))
  assert.deepEqual((await refused('/peerjs?key=peerjs&id=a%21&token=t')).frame, error('Bad PeerJS id'))
  const strict = await startWorker({ vars: { ALLOWED_ORIGINS: 'https://app.example', ORIGIN_QUOTA: '0' } })
  const plain = await startWorker({ push: false })
  try {
    const evil = await refused(socketPath('peerjs', 'a', 't'), strict.url, { Origin: 'https://evil.example' })
    assert.deepEqual(evil.frame, error('Unauthorized origin'))
    assert.equal(evil.closed.code, 4401)
    const none = await refused(socketPath('peerjs', 'a', 't'), plain.url)
    assert.deepEqual(none.frame, error('No PeerJS signalling here (no PEER_ROOMS binding)'))
    assert.equal(none.closed.code, 4501)
  } finally {
    await strict.stop()
    await plain.stop()
  }

  const calm = await peer('app-bad', 'calm')
  await calm.next()
  const cases = [
    ['not json', 4400, 'Bad JSON'],
    ['[1, 2]', 4400, 'Bad frame: expected a JSON object'],
    [JSON.stringify({ type: 'OFFER', dst: 'calm', payload: 'x'.repeat(70 * 1024) }), 4413, 'Frame too large']
  ]
  for (const [i, [frame, code, reason]] of cases.entries()) {
    const c = await peer('app-bad', `bad${i}`)
    await c.next()
    c.send(frame)
    assert.deepEqual(await c.closed, { code, reason }, frame.slice(0, 40))
  }
  const bin = await peer('app-bad', 'bin')
  await bin.next()
  bin.ws.send(Buffer.from([0xff, 0xfe, 0x00]))
  assert.deepEqual(await bin.closed, { code: 4400, reason: 'Frames are JSON text' })
  const flood = await peer('app-bad', 'flood')
  await flood.next()
  for (let i = 0; i < 401; i++) flood.send({ type: 'CANDIDATE', dst: 'nobody' })
  const closed = await flood.closed
  assert.deepEqual(closed, { code: 4429, reason: 'Too many frames: at most 400 or 512 KiB per 10 s per socket' })

  await settle(calm)
  calm.send({ type: 'OFFER', dst: 'calm', payload: 1 })
  assert.deepEqual(await calm.next(), { type: 'OFFER', src: 'calm', dst: 'calm', payload: 1 })
  calm.ws.close()
  await calm.closed
})

test('a silent socket (a crashed tab) is closed and its id freed; one that heartbeats stays', async () => {
  const quick = await startWorker({ vars: { SOCKET_IDLE_S: '1' } })
  try {
    const silent = await peer('app-idle', 'silent', 't1', quick.url)
    const beating = await peer('app-idle', 'beating', 't2', quick.url)
    const timer = setInterval(() => beating.send({ type: 'HEARTBEAT' }), 300)
    try {
      assert.equal((await silent.closed).code, 4408)
      await new Promise(resolve => setTimeout(resolve, 2500))
      assert.equal(beating.ws.readyState, 1, 'still open')
    } finally {
      clearInterval(timer)
    }
    const back = await peer('app-idle', 'silent', 'another', quick.url)
    assert.deepEqual(await back.next(), { type: 'OPEN' })
    for (const c of [beating, back]) { c.ws.close(); await c.closed }
  } finally {
    await quick.stop()
  }
})
