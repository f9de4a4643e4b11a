// Trystero in real Chromium through the worker (p2pcf-rs-client/trystero,
// a strategy on @trystero-p2p/core's createTopicStrategy): three pages join
// one room, makeAction messages go both ways (one over 16 KiB) and a closed
// page leaves the others (onPeerLeave). With a password, a socket on the
// worker's side of the same topics sees offers and answers only as
// ciphertext. Side by side in the same run: time to onPeerJoin through the
// worker and through Trystero's own MQTT strategy on Debian's mosquitto.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { webcrypto } from 'node:crypto'
import { sha1 } from '@trystero-p2p/core'
import { connectSocket, startWorker } from '../workerd/harness.mjs'
import { startMosquitto } from './mosquitto.mjs'
import { startBrowser, until } from './support.mjs'

let worker, chromium, mosquitto

before(async () => {
  worker = await startWorker()
  chromium = await startBrowser()
  mosquitto = await startMosquitto()
})

after(async () => {
  await chromium?.stop()
  await worker?.stop()
  mosquitto?.stop()
})

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const events = p => p.page.evaluate(() => window.events)
const joined = async p => (await events(p)).filter(e => e[0] === 'join').map(e => e[1])

/** `n` pages in `room`, loaded and left 300 ms (a fresh context is busy), not started. */
async function pages (n, params) {
  const out = []
  for (let i = 0; i < n; i++) out.push(await chromium.openClient({ name: `p${i}`, ...params }, '/trystero'))
  await sleep(300)
  return out
}

async function begin (ps) {
  let last = 0
  for (const p of ps) last = await p.page.evaluate(() => { window.begin(); return window.t0Wall + window.startedAt })
  return last
}

test('three Trystero pages join through the worker, messages go both ways (one over 16 KiB), a closed page leaves', async () => {
  const room = `lobby-${Date.now()}`
  const [a, b, c] = await pages(3, { worker: worker.url, app: 'p2pcf-rs-test', room })
  try {
    await begin([a, b, c])
    const ids = []
    for (const p of [a, b, c]) ids.push(await p.page.evaluate(() => window.selfId()))
    await until('everyone joined everyone', async () => {
      for (const p of [a, b, c]) if ((await joined(p)).length < 2) return false
      return true
    }, 30000)
    await a.page.evaluate(([id]) => window.send('hello b', 100, id), [ids[1]])
    await b.page.evaluate(([id]) => window.send('hello a', 20 * 1024, id), [ids[0]])
    await c.page.evaluate(() => window.send('hello all', 50))
    const got = async (p, from, size) => (await events(p)).some(e => e[0] === 'data' && e[1] === from && e[2] === size)
    await until('every message arrived', async () =>
      await got(b, ids[0], 100) && await got(a, ids[1], 20 * 1024) && await got(a, ids[2], 50) && await got(b, ids[2], 50), 30000)
    const closedAt = Date.now()
    // Closed as a user closes a tab (Trystero leaves its rooms on beforeunload).
    await c.page.close({ runBeforeUnload: true })
    await c.context.close()
    await until('c left a and b', async () => {
      for (const p of [a, b]) if (!(await events(p)).some(e => e[0] === 'leave' && e[1] === ids[2])) return false
      return true
    }, 45000)
    console.log(`a closed Trystero page left the others (onPeerLeave) after ${Date.now() - closedAt} ms`)
    assert.deepEqual(await a.page.evaluate(() => window.peers()), [ids[1]])
  } finally {
    for (const p of [a, b]) await p.context.close()
  }
})

/** Trystero's signal encryption (AES-GCM, key SHA-256 of `password:appId:roomId`), to check what the worker relayed. */
async function decrypt (password, appId, roomId, sealed) {
  const digest = await webcrypto.subtle.digest('SHA-256', new TextEncoder().encode(`${password}:${appId}:${roomId}`))
  const key = await webcrypto.subtle.importKey('raw', digest, { name: 'AES-GCM' }, false, ['decrypt'])
  const [iv, packed] = sealed.split('$')
  const plain = await webcrypto.subtle.decrypt({ name: 'AES-GCM', iv: new Uint8Array(iv.split(',').map(Number)) }, key, Buffer.from(packed, 'base64'))
  return new TextDecoder().decode(plain)
}

test('with a password, what the worker relays has no SDP in clear text, and cannot be read without the password', async () => {
  const app = 'p2pcf-rs-sealed'
  const room = `sealed-${Date.now()}`
  const password = 'correct horse battery'
  const [a, b] = await pages(2, { worker: worker.url, app, room, password })
  // A socket on the worker's side, on the room's topic and each page's own
  // (Trystero's selfId is made when its module loads, before joining).
  const rootPlain = ['Trystero', app, room].join('@')
  const topics = [await sha1(rootPlain)]
  for (const p of [a, b]) topics.push(await sha1([rootPlain, await p.page.evaluate(() => window.selfId())].join('@')))
  const tap = connectSocket(worker.url, `/y-webrtc/${app}`)
  await tap.opened
  const relayed = []
  tap.ws.on('message', raw => {
    const frame = JSON.parse(raw.toString())
    if (frame.type === 'publish') relayed.push(frame)
  })
  tap.send({ type: 'subscribe', topics })
  tap.send({ type: 'ping' })
  await until('tap subscribed', () => tap.pending() > 0)
  try {
    await begin([a, b])
    await until('a and b joined', async () => (await joined(a)).length === 1 && (await joined(b)).length === 1, 30000)
    await a.page.evaluate(() => window.send('sealed', 10))
    await until('b got it', async () => (await events(b)).some(e => e[0] === 'data'), 30000)
    const sealedSignals = () => relayed.map(f => JSON.parse(f.data)).flatMap(p => [p.offer, p.answer]).filter(Boolean)
    await until('the tap saw an offer and an answer', () => sealedSignals().length >= 2, 10000)
    const text = JSON.stringify(relayed)
    for (const clear of ['v=0', 'a=ice-ufrag', 'a=fingerprint', 'candidate:', 'IN IP4']) {
      assert.ok(!text.includes(clear), `"${clear}" relayed in clear text`)
    }
    const sealed = sealedSignals()
    for (const s of sealed) {
      assert.match(await decrypt(password, app, room, s), /^v=0/, 'with the password, SDP')
      await assert.rejects(decrypt('', app, room, s), 'without it, nothing')
    }
    console.log(`with a password, ${relayed.length} frames relayed, ${sealed.length} offers and answers, all sealed`)
  } finally {
    for (const p of [a, b]) await p.context.close()
    tap.ws.close()
  }
})

test('time to onPeerJoin: the worker next to Trystero\'s MQTT strategy on mosquitto', async () => {
  const ROUNDS = 5
  const servers = { worker: { worker: worker.url }, 'MQTT (mosquitto)': { broker: mosquitto.url } }
  /** ms from the second page's start until both pages saw the other join. */
  async function timeOne (server, label) {
    const ps = await pages(2, { ...server, app: 'p2pcf-rs-timing', room: `timing-${label}-${Date.now()}` })
    try {
      const last = await begin(ps)
      const at = await until(`both joined (${label}, ${Object.keys(server)[0]})`, async () => {
        const out = []
        for (const p of ps) {
          const { events, t0Wall } = await p.page.evaluate(() => ({ events: window.events, t0Wall: window.t0Wall }))
          const join = events.find(e => e[0] === 'join')
          if (!join) return false
          out.push(t0Wall + join[2])
        }
        return out
      }, 10000)
      return Math.round(Math.max(...at) - last)
    } finally {
      for (const p of ps) await p.context.close()
    }
  }
  // About one pair in six never sees the other join, through either server
  // alike (seen on the build before issue 16's size work too): Trystero's
  // own handshake on a loaded 2-core machine. Such a pair is timed again in
  // a fresh room, at most twice, and counted.
  const retried = {}
  async function timed (name, server, label) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await timeOne(server, `${label}-${attempt}`)
      } catch (e) {
        if (attempt === 3) throw e
        retried[name] = (retried[name] || 0) + 1
      }
    }
  }
  for (const [name, server] of Object.entries(servers)) await timed(name, server, 'warm-up')
  const runs = {}
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, server] of Object.entries(servers)) (runs[name] ||= []).push(await timed(name, server, round))
  }
  console.log(`Trystero pairs that never joined and were timed again: worker ${retried.worker || 0}, MQTT ${retried['MQTT (mosquitto)'] || 0}`)
  const median = xs => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  for (const [name, ms] of Object.entries(runs)) {
    console.log(`2 Trystero pages through ${name === 'worker' ? 'the worker' : "Trystero's MQTT strategy on mosquitto"}: both joined ${median(ms)} ms after the second started (median; runs ${ms.join(', ')} ms)`)
  }
  console.log(`Trystero onPeerJoin: worker / MQTT = ${(median(runs.worker) / Math.max(1, median(runs['MQTT (mosquitto)']))).toFixed(2)}`)
  assert.equal(Object.values(runs).flat().length, ROUNDS * 2)
})
