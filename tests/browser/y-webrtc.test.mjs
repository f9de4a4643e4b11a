// y-webrtc in real Chromium, unchanged: three pages run a WebrtcProvider on
// one Yjs document with the worker's /y-webrtc/<namespace> as their only
// signalling server; text typed on one page appears on the others, and a
// page that closes leaves the others' awareness. Side by side in the same
// run: the time to the first synced update through the worker and through
// y-webrtc's own bin/server.js on loopback.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import net from 'node:net'
import { startWorker } from '../workerd/harness.mjs'
import { freePort, startBrowser, until } from './support.mjs'

let worker, chromium, yServer, yUrl

/** y-webrtc's own signalling server (bin/server.js), on 127.0.0.1. */
async function startYServer () {
  const port = await freePort()
  const child = spawn(process.execPath, [
    '--import', new URL('./loopback-only.mjs', import.meta.url).pathname,
    new URL('../../node_modules/y-webrtc/bin/server.js', import.meta.url).pathname
  ], { env: { ...process.env, PORT: String(port) }, stdio: 'ignore' })
  await until('bin/server.js listening', () => new Promise(resolve => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) })
    socket.on('error', () => resolve(false))
  }), 15000)
  return { url: `ws://127.0.0.1:${port}`, stop: () => child.kill() }
}

before(async () => {
  worker = await startWorker()
  chromium = await startBrowser()
  yServer = await startYServer()
  yUrl = `${worker.url.replace(/^http/, 'ws')}/y-webrtc/yjs-test`
})

after(async () => {
  await chromium?.stop()
  await worker?.stop()
  yServer?.stop()
})

/** `n` pages in one room on `signaling`, loaded and left 300 ms (a fresh context is still busy), not started. */
async function pages (n, signaling, room, extra = {}) {
  const out = []
  for (let i = 0; i < n; i++) {
    out.push(await chromium.openClient({ signaling, room, name: `p${i}`, defer: '1', ...extra }, '/yjs'))
  }
  await sleep(300)
  return out
}

const read = (p, fn) => p.page.evaluate(fn)
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

/**
 * Starts the pages 250 ms apart, as people open a link, and returns when
 * the last one started (wall clock). Started in the same few ms, two
 * y-webrtc 10.3.0 peers can both offer and each drop the other's offer,
 * and never connect, whatever the server.
 */
async function begin (ps) {
  let last = 0
  for (const [i, p] of ps.entries()) {
    if (i > 0) await sleep(250)
    last = await p.page.evaluate(() => { window.begin(); return window.t0Wall + window.startedAt })
  }
  return last
}

test('three y-webrtc pages sync a Yjs text through the worker, and a closed page leaves awareness', async () => {
  const room = `yjs-room-${Date.now()}`
  const [a, b, c] = await pages(3, yUrl, room)
  try {
    await begin([a, b, c])
    await until('all three in each awareness', async () => {
      for (const p of [a, b, c]) if ((await read(p, () => window.names())).length < 3) return false
      return true
    }, 30000)
    await a.page.evaluate(() => window.type('hello'))
    await until('hello on b and c', async () =>
      (await read(b, () => window.text())) === 'hello' && (await read(c, () => window.text())) === 'hello')
    await c.page.evaluate(() => window.type(' world'))
    await until('hello world everywhere', async () => {
      for (const p of [a, b, c]) if ((await read(p, () => window.text())) !== 'hello world') return false
      return true
    })
    // Closed as a user closes a tab (y-webrtc says goodbye on beforeunload).
    const closedAt = Date.now()
    await c.page.close({ runBeforeUnload: true })
    await c.context.close()
    await until('p2 gone from the others\' awareness', async () =>
      JSON.stringify(await read(a, () => window.names())) === '["p0","p1"]' &&
      JSON.stringify(await read(b, () => window.names())) === '["p0","p1"]', 45000)
    console.log(`a closed y-webrtc page left the others' awareness after ${Date.now() - closedAt} ms`)
  } finally {
    for (const p of [a, b]) await p.context.close()
  }
})

test('with a password the pages still sync through the worker', async () => {
  const room = `yjs-secret-${Date.now()}`
  const [a, b] = await pages(2, yUrl, room, { password: 'correct horse' })
  try {
    await begin([a, b])
    await a.page.evaluate(() => window.type('sealed'))
    await until('sealed on b', async () => (await read(b, () => window.text())) === 'sealed', 30000)
  } finally {
    for (const p of [a, b]) await p.context.close()
  }
})

test('time to the first synced update: the worker next to y-webrtc\'s bin/server.js (2 and 3 pages)', async () => {
  // Pages loaded first and left 300 ms, then started 250 ms apart (see
  // `begin`), page 0 typing as it starts; a warm-up round per server;
  // servers take turns; medians of five rounds.
  const ROUNDS = 5
  const servers = { worker: yUrl, 'bin/server.js': yServer.url }
  /** ms from the last page's start until the text typed on page 0 as it started is on every page. */
  async function timeOne (signaling, n, label) {
    const ps = await pages(n, signaling, `yjs-timing-${n}-${label}-${Date.now()}`)
    try {
      await ps[0].page.evaluate(() => window.type('x'))
      const lastBegun = await begin(ps)
      const synced = await until(`${n} pages synced`, async () => {
        const at = []
        for (const p of ps.slice(1)) {
          const { events, t0Wall } = await read(p, () => ({ events: window.events, t0Wall: window.t0Wall }))
          const got = events.find(e => e[0] === 'text' && e[1] === 'x')
          if (!got) return false
          at.push(t0Wall + got[2])
        }
        return at
      }, 60000)
      return Math.round(Math.max(...synced) - lastBegun)
    } finally {
      for (const p of ps) await p.context.close()
    }
  }
  for (const url of Object.values(servers)) await timeOne(url, 2, 'warm-up')
  const runs = {}
  for (let round = 0; round < ROUNDS; round++) {
    for (const n of [2, 3]) {
      for (const [name, url] of Object.entries(servers)) (runs[`${name} ${n}`] ||= []).push(await timeOne(url, n, round))
    }
  }
  const median = xs => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  for (const n of [2, 3]) {
    for (const name of Object.keys(servers)) {
      const ms = runs[`${name} ${n}`]
      console.log(`${n} y-webrtc pages through ${name === 'worker' ? 'the worker' : "y-webrtc's bin/server.js"}: first update synced ${median(ms)} ms after the last page started (median; runs ${ms.join(', ')} ms)`)
    }
    console.log(`${n} pages: worker / bin/server.js = ${(median(runs[`worker ${n}`]) / median(runs[`bin/server.js ${n}`])).toFixed(2)}`)
  }
  assert.equal(Object.values(runs).flat().length, ROUNDS * 4)
})
