// HTTP tests of the built worker running in workerd with local R2.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { startWorker, Peer, r2Ops, sessions } from './harness.mjs'

let worker
before(async () => { worker = await startWorker() })
after(async () => { await worker?.stop() })

const assertCors = res => {
  assert.equal(res.headers.get('access-control-allow-origin'), '*')
  assert.equal(res.headers.get('access-control-allow-methods'), 'GET,HEAD,POST,DELETE,OPTIONS')
}

test('status page says the bucket works', async () => {
  const res = await fetch(worker.url + '/')
  const html = await res.text()
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type'), /text\/html/)
  assert.match(html, /R2 bucket is configured and answering/)
})

test('status page explains a missing bucket', async () => {
  const bare = await startWorker({ bucket: false })
  try {
    const res = await fetch(bare.url + '/any/path')
    assert.equal(res.status, 503)
    assert.match(await res.text(), /No R2 bucket is bound/)
    const post = await new Peer(bare.url, 'room-nobucket', 1).firstPoll()
    assert.equal(post.status, 503)
    assertCors(post)
  } finally {
    await bare.stop()
  }
})

test('CORS preflight and plain OPTIONS', async () => {
  let res = await fetch(worker.url, {
    method: 'OPTIONS',
    headers: {
      Origin: 'https://app.example',
      'Access-Control-Request-Method': 'POST',
      'Access-Control-Request-Headers': 'content-type,x-worker-method'
    }
  })
  // Exactly a 204 with every header a browser's preflight needs, and no body.
  assert.equal(res.status, 204)
  assertCors(res)
  assert.equal(res.headers.get('access-control-allow-headers'), 'content-type,x-worker-method')
  assert.equal(res.headers.get('access-control-max-age'), '86400')
  assert.equal(await res.text(), '')
  res = await fetch(worker.url, { method: 'OPTIONS' })
  assert.equal(res.status, 204)
  assert.equal(res.headers.get('allow'), 'GET, HEAD, POST, DELETE, OPTIONS')
  assert.equal(res.headers.get('access-control-allow-headers'), null, 'no preflight answer without a preflight')
})

test('two contexts: first poll, publish, poll, packages, leave', async () => {
  const a = new Peer(worker.url, 'room-two', 1)
  const b = new Peer(worker.url, 'room-two', 2)
  let res = await a.firstPoll()
  assert.equal(res.status, 200)
  assert.deepEqual(res.json, { ps: [], pk: [] })
  assert.equal(res.headers.get('content-type'), 'application/json')
  assertCors(res)
  const tA = Date.now()
  res = await a.publish(tA)
  assert.equal(res.status, 200, res.text)
  assert.ok(a.dk && a.dk.length >= 22)

  res = await b.firstPoll()
  assert.deepEqual(res.json.ps, [[...a.d(), tA]])
  const tB = Date.now()
  const pkg = b.packageTo(a)
  res = await b.publish(tB, [pkg])
  assert.deepEqual(sessions(res), [a.session])

  res = await a.poll(tA)
  assert.deepEqual(res.json.pk, [pkg], 'package delivered untouched')
  assert.deepEqual(sessions(res), [b.session])
  res = await b.poll(tB)
  assert.deepEqual(res.json.pk, [], 'sender does not get its own package')

  res = await b.leave(tB)
  assert.equal(res.status, 200)
  assert.deepEqual(res.json, {})
  res = await a.poll(tA)
  assert.deepEqual(res.json, { ps: [], pk: [] })
  res = await b.leave(tB)
  assert.equal(res.status, 404)
  assertCors(res)
})

test('polling hints: in the body, in an exposed X-Poll-Hint header and in Server-Timing', async () => {
  const a = new Peer(worker.url, 'room-hint', 1)
  let res = await a.firstPoll()
  assert.deepEqual(res.hint, { ms: 1000, mode: 'fast' })
  assert.equal(res.headers.get('x-poll-hint'), 'fast; ms=1000')
  assert.match(res.headers.get('access-control-expose-headers'), /X-Poll-Hint/)
  // The same hint for client/hints.js, which reads it from Resource Timing.
  assert.equal(res.headers.get('server-timing'), 'p2pcf-hint;desc=fast;dur=1000')
  assert.equal(res.headers.get('timing-allow-origin'), '*')
  res = await a.publish(Date.now())
  assert.equal(res.hint.mode, 'fast', 'the room just changed')
})

test('three contexts: packages routed to their recipient only, then all leave', async () => {
  const peers = [1, 2, 3].map(n => new Peer(worker.url, 'room-three', n))
  const t = Date.now()
  for (const p of peers) assert.equal((await p.publish(t)).status, 200)
  const [p0, p1, p2] = peers
  const to1 = p0.packageTo(p1)
  const to2 = p0.packageTo(p2)
  await p0.publish(t + 1, [to1, to2])
  const back = p1.packageTo(p0)
  await p1.publish(t + 1, [back])
  assert.deepEqual((await p1.poll(t + 1)).json.pk, [to1])
  assert.deepEqual((await p2.poll(t)).json.pk, [to2])
  assert.deepEqual((await p0.poll(t + 1)).json.pk, [back])
  for (const me of peers) {
    const res = await me.poll(t)
    assert.deepEqual(sessions(res), peers.filter(p => p !== me).map(p => p.session).sort())
  }
  for (const p of peers) assert.equal((await p.leave()).status, 200)
  assert.deepEqual((await new Peer(worker.url, 'room-three', 9).firstPoll()).json.ps, [])
})

test('error responses: 4xx with a short reason and CORS, nothing stored', async () => {
  const p = new Peer(worker.url, 'room-errors', 1)
  const cases = [
    [{ r: 'abc', k: 'x' }, 400, 'Bad room id'],
    [{ r: 'room/../x', k: 'x' }, 400, 'Bad room id'],
    [{ r: 'room-errors', k: '' }, 400, 'Bad context id'],
    [{ r: 'room-errors', k: 'x', d: p.d(), t: -5, x: 120000, p: [] }, 400, 'Bad timestamp'],
    [{ r: 'room-errors', k: 'x', d: p.d(), t: Date.now(), x: 0, p: [] }, 400, 'Bad expiration'],
    [{ r: 'room-errors', k: 'x', d: [1], t: Date.now(), x: 1000, p: [] }, 400, 'Bad data length'],
    [{ r: 'room-errors', k: 'x', d: p.d().map((v, i) => (i === 5 ? ['999.1.1.1'] : v)), t: Date.now(), x: 1000, p: [] }, 400, 'Bad reflexive IPs'],
    [{ r: 'room-errors', k: 'x', d: p.d(), t: Date.now(), x: 1000, p: [[7]] }, 400, 'Bad package']
  ]
  for (const [body, status, reason] of cases) {
    const res = await p.send(body)
    assert.equal(res.status, status, JSON.stringify(body))
    assert.equal(res.text, reason)
    assertCors(res)
  }
  let res = await fetch(worker.url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"r":' })
  assert.equal(res.status, 400)
  assertCors(res)
  res = await fetch(worker.url, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: '{}' })
  assert.equal(res.status, 415)
  assertCors(res)
  res = await fetch(worker.url, { method: 'PUT', body: '{}' })
  assert.equal(res.status, 405)
  assertCors(res)
  res = await p.send({ r: 'room-errors', k: 'x' }, { leave: true })
  assert.equal(res.status, 400)
  assert.equal(res.text, 'Missing delete key')
  // Nothing of the refused requests was stored.
  assert.deepEqual((await p.firstPoll()).json, { ps: [], pk: [] })
})

test('20 contexts publishing at the same moment all see each other (R2 conditional puts)', async () => {
  const peers = Array.from({ length: 20 }, (_, n) => new Peer(worker.url, 'room-storm', n))
  const t = Date.now()
  const results = await Promise.all(peers.map(p => p.publish(t)))
  for (const r of results) assert.equal(r.status, 200, r.text)
  const ops = results.map(r2Ops)
  for (const p of peers) {
    const res = await p.poll(t)
    assert.equal(res.json.ps.length, 19)
  }
  const a = ops.reduce((s, o) => s + o.a, 0)
  const b = ops.reduce((s, o) => s + o.b, 0)
  console.log(`workerd: 20 simultaneous publishes made ${a} class A and ${b} class B operations`)
})

test('R2 operations per steady poll for rooms of 2, 4, 8 and 16 (as reported by the worker)', { timeout: 180000 }, async () => {
  const rooms = await Promise.all([2, 4, 8, 16].map(async n => {
    const peers = Array.from({ length: n }, (_, i) => new Peer(worker.url, `room-cost-${n}`, i))
    const t = Date.now()
    for (const p of peers) assert.equal((await p.publish(t)).status, 200)
    // In the join window a poll also reads the outboxes of peers that just joined.
    const joining = await peers[0].poll(t)
    return { n, peers, t, joining }
  }))
  // Steady state: the 45 s join windows have closed (entries live for 120 s).
  await new Promise(resolve => setTimeout(resolve, 46000))
  for (const { n, peers, t, joining } of rooms) {
    const res = await peers[0].poll(t)
    assert.equal(res.json.ps.length, n - 1)
    assert.deepEqual(r2Ops(res), { a: 0, b: 1 })
    console.log(`workerd: room of ${n}: steady poll = ${JSON.stringify(r2Ops(res))}, poll in the join window = ${JSON.stringify(r2Ops(joining))}`)
  }
})

test('ALLOWED_ORIGINS and ORIGIN_QUOTA', async () => {
  const listed = await startWorker({ vars: { ALLOWED_ORIGINS: 'https://good.example' } })
  try {
    const p = new Peer(listed.url, 'room-origins', 1)
    assert.equal((await p.firstPoll({ origin: 'https://good.example' })).status, 200)
    const res = await p.firstPoll({ origin: 'https://evil.example' })
    assert.equal(res.status, 401)
    assertCors(res)
    assert.equal((await p.firstPoll()).status, 200, 'no Origin: not a browser, not checked')
  } finally {
    await listed.stop()
  }
  const metered = await startWorker({ vars: { ORIGIN_QUOTA: '3' } })
  try {
    const p = new Peer(metered.url, 'room-quota', 1)
    for (let i = 0; i < 3; i++) assert.equal((await p.firstPoll({ origin: 'https://busy.example' })).status, 200)
    const res = await p.firstPoll({ origin: 'https://busy.example' })
    assert.equal(res.status, 429)
    assert.equal(res.text, 'Origin over quota')
    assertCors(res)
  } finally {
    await metered.stop()
  }
})

test('one structured JSON log line per request, with no ids, keys or packages in it', async () => {
  const before = worker.logs.length
  const p = new Peer(worker.url, 'room-logs-secret', 1)
  const q = new Peer(worker.url, 'room-logs-secret', 2)
  p.context = 'ctx-logs-secret'
  await p.firstPoll({ origin: 'https://origin-logs-secret.example' })
  await q.publish(Date.now())
  const pkg = p.packageTo(q)
  pkg[5] = 'ufrag-logs-secret'
  await p.publish(Date.now(), [pkg])
  await p.send({ r: 'x', k: 'y' })
  const left = await p.leave()
  assert.equal(left.status, 200)
  await p.leave() // 404: the key is gone
  // The runtime's stdout arrives asynchronously.
  for (let i = 0; i < 50 && worker.logs.length < before + 6; i++) await new Promise(resolve => setTimeout(resolve, 20))
  const printed = worker.logs.slice(before)
  const lines = printed.map(l => JSON.parse(l))
  assert.deepEqual(lines.map(l => [l.op, l.status]), [['poll', 200], ['publish', 200], ['publish', 200], ['refused', 400], ['leave', 200], ['leave', 404]])
  for (const l of lines) {
    assert.ok(Number.isInteger(l.ms) && l.r2 && 'peers' in l, JSON.stringify(l))
  }
  assert.equal(lines[2].peers, 2)
  assert.match(lines[0].room, /^[0-9a-f]{16}$/)
  // What a log reader must never learn: the room, who is in it, their keys and packages.
  for (const secret of ['room-logs-secret', 'ctx-logs-secret', p.session, q.session, p.dk, 'ufrag-logs-secret', 'origin-logs-secret']) {
    for (const line of printed) assert.ok(!line.includes(secret), `log line leaks ${secret}: ${line}`)
  }
})

test('a request body is capped while it is read, whatever Content-Length says', async () => {
  // A chunked body (no Content-Length) that does not end until the answer
  // comes: the worker must stop reading at MAX_BODY_BYTES and answer, not wait
  // for (or buffer) the rest. A raw socket, because the runtime may close the
  // connection while the body is still being sent, which fetch reports as a
  // failure even after the answer arrived.
  const answer = await postEndlessBody(worker.url, 64 * 1024 * 1024)
  assert.match(answer, /^HTTP\/1\.1 413 /)
  assert.match(answer, /\r\naccess-control-allow-origin: \*\r\n/i)
  assert.ok(answer.slice(answer.indexOf('\r\n\r\n')).includes('Request body too large'), answer)
})

/**
 * Sends a chunked POST of spaces until an answer arrives or `limit` bytes are
 * sent, and resolves to everything the server wrote back. Never leaves a
 * writer running: the socket is closed when the answer starts or after 15 s.
 */
function postEndlessBody (url, limit) {
  const { hostname, port } = new URL(url)
  const chunk = Buffer.from(`4000\r\n${' '.repeat(16 * 1024)}\r\n`)
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname)
    const received = []
    let sent = 0
    let answered = false
    const timer = setTimeout(() => socket.destroy(new Error('no answer within 15 s')), 15000)
    const finish = error => {
      clearTimeout(timer)
      const text = Buffer.concat(received).toString()
      if (text) resolve(text)
      else reject(error ?? new Error('connection closed without an answer'))
    }
    socket.on('data', data => { answered = true; received.push(data) })
    socket.on('error', () => {}) // a reset after the answer is expected
    socket.on('close', () => finish())
    socket.on('connect', async () => {
      socket.write(`POST / HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`)
      while (!answered && !socket.destroyed && sent < limit) {
        if (!socket.write(chunk)) await new Promise(resolve => socket.once('drain', resolve).once('close', resolve))
        sent += chunk.length
        await new Promise(resolve => setTimeout(resolve, 1))
      }
      // Whatever happens next, the answer (or its absence) ends the wait.
      setTimeout(() => socket.destroy(), 2000)
    })
  })
}

test('an index this build cannot read is answered 503 and left untouched', async () => {
  const bucket = await worker.bucket()
  const future = JSON.stringify({ v: 99, e: { 'ctx-future': { anything: true } } })
  await bucket.put('rooms/room-from-the-future', future)
  const p = new Peer(worker.url, 'room-from-the-future', 1)
  for (const res of [await p.publish(Date.now()), await p.poll(Date.now())]) {
    assert.equal(res.status, 503)
    assert.equal(res.text, 'Room data is in a format this version cannot read; nothing was changed')
    assertCors(res)
  }
  assert.equal(await (await bucket.get('rooms/room-from-the-future')).text(), future)
})

test('optional per-client rate limit through the RATE_LIMITER binding', async () => {
  const limited = await startWorker({ ratelimits: { RATE_LIMITER: { simple: { limit: 3, period: 60 } } } })
  try {
    const p = new Peer(limited.url, 'room-rate', 1)
    const statuses = []
    for (let i = 0; i < 5; i++) statuses.push((await p.firstPoll()).status)
    assert.deepEqual(statuses, [200, 200, 200, 429, 429])
    const res = await p.firstPoll()
    assert.equal(res.text, 'Too many requests from this client')
    assert.equal((await fetch(limited.url + '/turn')).status, 429, 'TURN credentials count against the limit too')
    assertCors(res)
    assert.equal(res.headers.get('retry-after'), '10')
    assert.equal((await fetch(limited.url)).status, 200, 'the status page is not limited')
  } finally {
    await limited.stop()
  }
  // Without the binding nothing is limited.
  const p = new Peer(worker.url, 'room-rate-free', 1)
  for (let i = 0; i < 5; i++) assert.equal((await p.firstPoll()).status, 200)
})
