// The relay API in real Chromium: three pages build a simple-peer 9.11.1
// full mesh (trickle ICE on) signalled only through client/relay.js and the
// built worker, exchange data both ways, and when one leaves the others see
// it go (the relay's leave and the data channel's close); three pages form
// a @mattkrick/fast-rtc-swarm 0.4.1 swarm the same way.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { startWebSocketRelay } from './ws-relay.mjs'
import { signRoom } from 'p2pcf-rs-client/sign-room'
import { startWorker } from '../workerd/harness.mjs'
import { startBrowser, until } from './support.mjs'

let worker, chromium, wss, wsUrl

before(async () => {
  worker = await startWorker()
  chromium = await startBrowser()
  wss = await startWebSocketRelay()
  wsUrl = `ws://127.0.0.1:${wss.address().port}`
})

after(async () => {
  await chromium?.stop()
  await worker?.stop()
  wss?.close()
})

/** Three simple-peer pages in `room` on `url`: a full mesh, data both ways, one leaves. */
async function meshOfThree (url, room, label, { push = true } = {}) {
  const started = Date.now()
  const names = ['ann', 'bob', 'cy']
  const pages = []
  for (const name of names) pages.push(await chromium.openClient({ worker: url, room, name }, '/relay'))
  const eventsOf = p => p.page.evaluate(() => window.events)
  const connectedTo = async p => (await eventsOf(p)).filter(e => e[0] === 'connect').map(e => e[1])
  await until('a full mesh', async () => {
    for (const p of pages) if ((await connectedTo(p)).length < 2) return false
    return true
  }, 60000)
  console.log(`three simple-peer browsers in a full mesh through the relay${label} in ${Date.now() - started} ms`)
  const ids = await Promise.all(pages.map(p => p.page.evaluate(() => window.relay.id)))
  const onSocket = await Promise.all(pages.map(p => p.page.evaluate(() => !!window.relay._ws)))
  assert.deepEqual(onSocket, [push, push, push], push ? 'pushed over WebSockets' : 'polling')
  for (const [i, p] of pages.entries()) {
    const others = ids.filter((_, j) => j !== i).sort()
    assert.deepEqual((await connectedTo(p)).sort(), others)
    const errors = (await eventsOf(p)).filter(e => e[0] === 'error')
    assert.deepEqual(errors, [])
  }
  // Data both ways on every link.
  for (const [i, p] of pages.entries()) await p.page.evaluate(t => window.sendAll(t), `hello from ${names[i]}`)
  for (const [i, p] of pages.entries()) {
    const got = await until(`${names[i]} receives`, async () => {
      const r = await p.page.evaluate(() => window.received)
      return r.length >= 2 && r
    })
    assert.deepEqual(got.map(([, text]) => text).sort(), names.filter((_, j) => j !== i).map(n => `hello from ${n}`).sort())
  }
  // cy leaves (pagehide: the relay's keepalive leave); ann and bob see it go.
  // Its browser context stays open until then: closing it at once could
  // cancel the keepalive request before it is sent.
  const closed = new Promise(resolve => pages[2].page.once('close', resolve))
  await pages[2].page.close({ runBeforeUnload: true })
  await closed
  for (const p of pages.slice(0, 2)) {
    await until('leave of cy', async () => (await eventsOf(p)).some(e => e[0] === 'leave' && e[1] === ids[2]), 20000)
    await until('close of the link to cy', async () => (await eventsOf(p)).some(e => e[0] === 'close' && e[1] === ids[2]), 20000)
  }
  const left = await pages[0].page.evaluate(() => [...window.relay.peers.keys()])
  assert.deepEqual(left, [ids[1]])
  for (const p of pages) await p.context.close()
}

test('three simple-peer browsers form a mesh through the relay, talk, and see one leave', async () => {
  await meshOfThree(worker.url, `relay-mesh-${Date.now()}`, '')
})

test('the same mesh in a signed room on a deployment with ROOM_SECRET', async () => {
  const secret = randomBytes(18).toString('base64')
  const signedWorker = await startWorker({ vars: { ROOM_SECRET: secret } })
  try {
    const room = await signRoom(`mesh-${Date.now()}`, secret, { expiresInS: 600 })
    await meshOfThree(signedWorker.url, room, ' (signed room)')
    const plain = await fetch(signedWorker.url + '/relay/v1', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ room: 'mesh-plain' }) })
    assert.equal(plain.status, 403)
  } finally {
    await signedWorker.stop()
  }
})

test('the same mesh on a deployment without RELAY_ROOMS: the socket is refused (501), SignalRelay polls', async () => {
  const pollOnly = await startWorker({ push: false })
  try {
    await meshOfThree(pollOnly.url, `mesh-poll-${Date.now()}`, ' (no push: polling)', { push: false })
  } finally {
    await pollOnly.stop()
  }
})

test('three fast-rtc-swarm browsers form the swarm through the relay and exchange data', async () => {
  const room = `relay-swarm-${Date.now()}`
  const started = Date.now()
  const pages = []
  for (let i = 0; i < 3; i++) pages.push(await chromium.openClient({ worker: worker.url, room, name: `swarm-${i}` }, '/swarm'))
  const eventsOf = p => p.page.evaluate(() => window.events)
  const linked = async p => new Set((await eventsOf(p)).filter(e => e[0] === 'open').map(e => e[1])).size
  await until('the swarm', async () => {
    for (const p of pages) if (await linked(p) < 2) return false
    return true
  }, 60000).catch(async err => {
    for (const p of pages) console.log(JSON.stringify(await eventsOf(p)))
    throw err
  })
  console.log(`three fast-rtc-swarm browsers in a swarm through the relay in ${Date.now() - started} ms`)
  const ids = await Promise.all(pages.map(p => p.page.evaluate(() => window.relay.id)))
  const onSocket = await Promise.all(pages.map(p => p.page.evaluate(() => !!window.relay._ws)))
  assert.deepEqual(onSocket, [true, true, true], 'pushed over WebSockets')
  for (const [i, p] of pages.entries()) {
    // One connection per other member (fast-rtc-peer may report 'open' again
    // for the same connection when it renegotiates).
    const events = await eventsOf(p)
    const links = new Map(events.filter(e => e[0] === 'open').map(e => [e[1], e[2]]))
    assert.deepEqual([...links.values()].sort(), ids.filter((_, j) => j !== i).sort(), JSON.stringify(events))
    await p.page.evaluate(t => window.swarm.broadcast(t), `swarm hello ${i}`)
  }
  for (const [i, p] of pages.entries()) {
    const got = await until(`member ${i} receives`, async () => {
      const r = await p.page.evaluate(() => window.received)
      return r.length >= 2 && r
    })
    assert.deepEqual([...got].sort(), [0, 1, 2].filter(j => j !== i).map(j => `swarm hello ${j}`))
  }
  for (const p of pages) await p.context.close()
})

test('time from start() to open data channels: the relay pushed and polling, next to a WebSocket relay (2 and 3 simple-peer browsers)', async () => {
  // Every page is loaded first, left 300 ms (a fresh Chromium context is
  // still busy when its page has loaded), and all start() at once, so page
  // loading is not timed; one unmeasured round per transport warms it up; transports
  // take turns within each round, so a busy moment of the machine does not
  // fall on one of them only. Printed: the median of ROUNDS and every run.
  const ROUNDS = 5
  const transports = ['relay', 'poll', 'ws']
  /** ms from the first start() to the last data channel open, over `n`
   * pages, and to the last page's start() resolving (joined, welcomed). */
  async function timeOne (transport, n, label) {
    const room = `timing-${transport}-${n}-${label}-${Date.now()}`
    const pages = []
    for (let i = 0; i < n; i++) pages.push(await chromium.openClient({ worker: worker.url, ws: wsUrl, transport, room, name: `t${i}`, defer: '1' }, '/relay'))
    await new Promise(resolve => setTimeout(resolve, 300))
    try {
      const begun = await Promise.all(pages.map(p => p.page.evaluate(() => { window.begin(); return window.t0Wall + window.startedAt })))
      const opened = await until(`${n} over ${transport}`, async () => {
        const last = []
        const welcomed = []
        for (const p of pages) {
          const { events, t0Wall } = await p.page.evaluate(() => ({ events: window.events, t0Wall: window.t0Wall }))
          const opens = events.filter(e => e[0] === 'connect')
          const started = events.find(e => e[0] === 'started')
          if (opens.length < n - 1 || !started) return false
          last.push(t0Wall + Math.max(...opens.map(e => e[2])))
          welcomed.push(t0Wall + started[2])
        }
        return { last, welcomed }
      }, 60000)
      const first = Math.min(...begun)
      return { open: Math.round(Math.max(...opened.last) - first), welcomed: Math.round(Math.max(...opened.welcomed) - first) }
    } finally {
      for (const p of pages) await p.context.close()
    }
  }
  for (const transport of transports) await timeOne(transport, 2, 'warm-up')
  const runs = {}
  const welcomed = {}
  for (let round = 0; round < ROUNDS; round++) {
    for (const n of [2, 3]) {
      for (const transport of transports) {
        const t = await timeOne(transport, n, round)
        ;(runs[`${transport} ${n}`] ||= []).push(t.open)
        ;(welcomed[`${transport} ${n}`] ||= []).push(t.welcomed)
      }
    }
  }
  const median = xs => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const over = { relay: 'the worker relay, pushed (Durable Object)', poll: 'the worker relay, polling', ws: 'a Node WebSocket relay' }
  for (const n of [2, 3]) {
    for (const transport of transports) {
      const ms = runs[`${transport} ${n}`]
      console.log(`${n} simple-peer browsers over ${over[transport]}: all data channels open ${median(ms)} ms after start() (median; runs ${ms.join(', ')} ms), every page joined after ${median(welcomed[`${transport} ${n}`])} ms`)
    }
    console.log(`${n} browsers: pushed / Node WebSocket relay = ${(median(runs[`relay ${n}`]) / median(runs[`ws ${n}`])).toFixed(2)}`)
  }
  assert.equal(Object.values(runs).flat().length, ROUNDS * 6)
})

test('time until the others see a leave, pushed: a closed tab, a killed renderer', async () => {
  const quick = await startWorker({ vars: { RESUME_WINDOW_S: '5' } })
  const pages = []
  try {
    const room = `leave-${Date.now()}`
    for (const name of ['ann', 'bob', 'cy']) pages.push(await chromium.openClient({ worker: quick.url, room, name }, '/relay'))
    await until('everyone sees everyone', async () => {
      for (const p of pages) if ((await p.page.evaluate(() => window.relay.peers.size)) < 2) return false
      return true
    })
    const ids = await Promise.all(pages.map(p => p.page.evaluate(() => window.relay.id)))
    const annSees = id => async () => (await pages[0].page.evaluate(() => window.events)).some(e => e[0] === 'leave' && e[1] === id)
    let started = Date.now()
    await pages[1].page.close({ runBeforeUnload: true })
    await until('the closed tab seen leaving', annSees(ids[1]), 20000)
    const closedTab = Date.now() - started
    const cdp = await pages[2].context.newCDPSession(pages[2].page)
    started = Date.now()
    cdp.send('Page.crash').catch(() => {})
    await until('the killed renderer seen leaving', annSees(ids[2]), 60000)
    const killed = Date.now() - started
    console.log(`a leave seen by the others: closed tab ${closedTab} ms, killed renderer ${killed} ms (RESUME_WINDOW_S=5; 60 s by default)`)
  } finally {
    for (const p of pages) await p.context.close().catch(() => {})
    await quick.stop()
  }
})
