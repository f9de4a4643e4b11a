// The browser helpers under failure (issue 17, point 4), with a fake fetch
// and fake timers, counting calls: permanent refusals back off and stop,
// the back/forward cache resumes, a retried join is the same join, and TURN
// renewals follow the answer's lifetime whatever the page's clock says.
import { test, mock } from 'node:test'
import assert from 'node:assert/strict'
import { SignalRelay } from 'p2pcf-rs-client/relay'
import { useTurnCredentials } from 'p2pcf-rs-client/turn'

const json = (body, status = 200, headers = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } })

/** Lets promise callbacks run, then moves the fake clock `ms` in steps. */
async function elapse (ms, step = 250) {
  for (let t = 0; t < ms; t += step) {
    for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve))
    mock.timers.tick(step)
  }
  for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve))
}

const joined = { id: 'me', token: 't'.repeat(32), peers: [], messages: [], hint: { ms: 1000, mode: 'fast' } }

test('a permanent refusal is backed off, and a few in a row stop the relay with an error', async () => {
  mock.timers.enable({ apis: ['setTimeout'] })
  try {
    const calls = []
    const fetch = async (url, init) => {
      const body = JSON.parse(init.body)
      calls.push(body)
      if (!body.id) return json(joined)
      return new Response('Unauthorized origin', { status: 401 })
    }
    const relay = new SignalRelay({ url: 'https://w.example', room: 'room-x', fetch })
    const errors = []
    relay.on('error', err => errors.push(err))
    await relay.start()
    await elapse(10 * 60 * 1000, 1000)
    const polls = calls.filter(b => b.id && !b.leave).length
    assert.equal(polls, 3, `polls after the join in 10 minutes: ${polls}`)
    assert.ok(errors.at(-1).fatal, 'the last error says the relay stopped')
    assert.equal(calls.at(-1).leave, true, 'and it left')
    await assert.rejects(relay.send('peer', 1), /stopped/)
  } finally {
    mock.timers.reset()
  }
})

test('a refused batch is rejected and the next one goes after a back-off', async () => {
  mock.timers.enable({ apis: ['setTimeout'] })
  try {
    const times = []
    let now = 0
    const fetch = async (url, init) => {
      const body = JSON.parse(init.body)
      if (!body.id) return json(joined)
      times.push({ at: now, send: body.send?.length ?? 0 })
      if (body.send?.some(m => m.data === 'too big')) return new Response('Message too large', { status: 413 })
      return json({ ...joined, hint: { ms: 60000, mode: 'slow' } })
    }
    const relay = new SignalRelay({ url: 'https://w.example', room: 'room-x', fetch })
    await relay.start()
    const refused = relay.send('peer', 'too big')
    const outcome = refused.then(() => 'stored', err => err.status)
    for (let i = 0; i < 40; i++) { await elapse(100, 100); now += 100 }
    assert.equal(await outcome, 413)
    const after = relay.send('peer', 'fine')
    for (let i = 0; i < 40; i++) { await elapse(100, 100); now += 100 }
    await after
    const refusedAt = times.find(t => t.send === 1).at
    const nextAt = times.filter(t => t.at > refusedAt)[0].at
    assert.ok(nextAt - refusedAt >= 250, `next request ${nextAt - refusedAt} ms after the refusal`)
    relay.stop()
  } finally {
    mock.timers.reset()
  }
})

test('a join retried after a lost answer carries the same nonce', async () => {
  const joins = []
  const fetch = async (url, init) => {
    const body = JSON.parse(init.body)
    if (body.leave) return json({})
    if (!body.id) {
      joins.push(body.nonce)
      if (joins.length === 1) throw new TypeError('network error (the answer was lost)')
      return json(joined)
    }
    return json({ ...joined, hint: { ms: 60000, mode: 'slow' } })
  }
  const relay = new SignalRelay({ url: 'https://w.example', room: 'room-x', fetch })
  relay.on('error', () => {})
  await relay.start()
  relay.stop()
  assert.equal(joins.length, 2)
  assert.match(joins[0], /^[A-Za-z0-9_-]{22}$/)
  assert.equal(joins[1], joins[0])
})

test('pagehide leaves; a page restored from the back/forward cache joins again', async () => {
  const target = new EventTarget()
  globalThis.addEventListener = target.addEventListener.bind(target)
  globalThis.removeEventListener = target.removeEventListener.bind(target)
  try {
    const calls = []
    let n = 0
    const fetch = async (url, init) => {
      const body = JSON.parse(init.body)
      calls.push(body)
      if (body.leave) return json({})
      if (!body.id) return json({ ...joined, id: `me-${++n}`, peers: [{ id: 'other' }] })
      return json({ ...joined, id: body.id, peers: [{ id: 'other' }], hint: { ms: 60000, mode: 'slow' } })
    }
    const relay = new SignalRelay({ url: 'https://w.example', room: 'room-x', fetch })
    const events = []
    relay.on('join', id => events.push(`join ${id}`)).on('leave', id => events.push(`leave ${id}`))
    await relay.start()
    assert.equal(relay.id, 'me-1')
    target.dispatchEvent(Object.assign(new Event('pagehide'), { persisted: true }))
    assert.deepEqual(calls.at(-1), { room: 'room-x', id: 'me-1', token: joined.token, leave: true })
    target.dispatchEvent(Object.assign(new Event('pageshow'), { persisted: true }))
    await new Promise(resolve => setTimeout(resolve, 50))
    assert.equal(relay.id, 'me-2', 'joined again as a new peer')
    assert.deepEqual(events, ['join other', 'leave other', 'join other'])
    // A page that is really going away stops for good.
    target.dispatchEvent(Object.assign(new Event('pagehide'), { persisted: false }))
    target.dispatchEvent(Object.assign(new Event('pageshow'), { persisted: true }))
    await new Promise(resolve => setTimeout(resolve, 50))
    assert.equal(calls.filter(b => !b.id && !b.leave).length, 2, 'no third join')
  } finally {
    delete globalThis.addEventListener
    delete globalThis.removeEventListener
  }
})

/** A /turn that answers an hour's credentials, by a clock `skewMs` off the page's. */
function turnServer (skewMs, calls) {
  return async () => {
    calls.push(Date.now())
    const serverNow = Date.now() - skewMs
    return json({ iceServers: [{ urls: ['turn:t.example:3478'] }], expiresAt: serverNow + 3600000, expiresIn: 3600000 })
  }
}

for (const [label, skewMs] of [['an hour fast', 3600000], ['an hour behind', -3600000], ['on time', 0]]) {
  test(`TURN renewals follow the answer's lifetime on a page ${label}`, async () => {
    mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_795_219_200_000 })
    try {
      const calls = []
      const p2pcf = { stunIceServers: [], turnIceServers: [] }
      const turn = useTurnCredentials(p2pcf, 'https://w.example', { fetch: turnServer(skewMs, calls) })
      await turn.ready
      await elapse(3 * 3600000, 60000)
      turn.stop()
      // Renewed a minute before each expiry: the first fetch and one an hour.
      assert.ok(calls.length >= 3 && calls.length <= 4, `${calls.length} fetches in 3 hours`)
      const gaps = calls.slice(1).map((t, i) => t - calls[i])
      for (const gap of gaps) assert.ok(gap >= 3480000 && gap <= 3600000, `renewed after ${gap} ms`)
    } finally {
      mock.timers.reset()
    }
  })
}

test('in a signed room, TURN requests carry the room as proof; in a plain room they carry nothing', async () => {
  const seen = []
  const fetch = async (url, init) => {
    seen.push(init?.headers?.['X-Room'] ?? null)
    return json({ iceServers: [{ urls: ['turn:t.example:3478'] }], expiresAt: Date.now() + 3600000, expiresIn: 3600000 })
  }
  const signed = 'team-chat_1800000000_CfdhulWBsa7cBbqK'
  for (const roomId of [signed, 'team-chat']) {
    const turn = useTurnCredentials({ stunIceServers: [], turnIceServers: [], roomId }, 'https://w.example', { fetch })
    await turn.ready
    turn.stop()
  }
  const explicit = useTurnCredentials({ stunIceServers: [], turnIceServers: [], roomId: 'team-chat' }, 'https://w.example', { fetch, room: signed })
  await explicit.ready
  explicit.stop()
  assert.deepEqual(seen, [signed, null, signed])
})

test('a batch whose answer was lost, retried after its letters expired (409), is done, not refused', async () => {
  mock.timers.enable({ apis: ['setTimeout'] })
  try {
    const sends = []
    const fetch = async (url, init) => {
      const body = JSON.parse(init.body)
      if (!body.id) return json(joined)
      if (!body.send?.length) return json({ ...joined, hint: { ms: 60000, mode: 'slow' } })
      sends.push(body.send.map(m => m.seq))
      // Stored, then the answer is lost; the retry finds the numbers used.
      if (sends.length === 1) throw new TypeError('answer lost')
      if (sends.length === 2) return new Response('Message seq already used: each message needs a seq above the last one sent', { status: 409 })
      return json(joined)
    }
    const relay = new SignalRelay({ url: 'https://w.example', room: 'room-x', fetch })
    const errors = []
    relay.on('error', err => errors.push(err))
    await relay.start()
    const first = relay.send('peer', 'one')
    await elapse(5000)
    await first
    const second = relay.send('peer', 'two')
    await elapse(5000)
    await second
    assert.deepEqual(sends, [[1], [1], [2]])
    assert.ok(errors.every(e => !e.fatal))
  } finally {
    mock.timers.reset()
  }
})
