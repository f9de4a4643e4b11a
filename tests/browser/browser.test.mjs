// Real-browser test: two Chromium pages run the stock p2pcf@1.3.14 client
// against the built worker (workerd, local R2), connect over WebRTC on
// loopback, exchange messages both ways (one over 16 KB, so chunked), then
// one page leaves and the other sees `peerclose`, and the worker forgets it.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, statSync } from 'node:fs'
import { startWorker, Peer } from '../workerd/harness.mjs'
import { startBrowser, until } from './support.mjs'

let worker, chromium, browser

before(async () => {
  worker = await startWorker()
  chromium = await startBrowser()
  browser = chromium.browser
})

after(async () => {
  await chromium?.stop()
  await worker?.stop()
})

const openClient = (client, room, hints = false) =>
  chromium.openClient({ client, room, worker: worker.url, hints: hints ? '1' : '0' })

test('two stock clients connect through the worker, exchange messages, and part', async () => {
  const room = `browser-room-${Date.now()}`
  const started = Date.now()
  const alice = await openClient('alice-client', room)
  const bob = await openClient('bob-client', room)
  const logOf = c => c.page.evaluate(() => window.p2pcfLog)

  const connected = c => until('peerconnect', async () => (await logOf(c)).find(e => e[0] === 'peerconnect'), 45000)
  const [aliceSees, bobSees] = await Promise.all([connected(alice), connected(bob)])
  const connectMs = Date.now() - started
  console.log(`two browsers connected in ${connectMs} ms`)
  assert.equal(aliceSees[2], 'bob-client')
  assert.equal(bobSees[2], 'alice-client')
  const aliceSession = await alice.page.evaluate(() => window.client.sessionId)
  const bobSession = await bob.page.evaluate(() => window.client.sessionId)

  // A message each way, then one of 40 000 bytes (over 16 KB: chunked by the client).
  await alice.page.evaluate(() => window.sendToAll({ text: 'hello from alice' }))
  await bob.page.evaluate(() => window.sendToAll({ text: 'hello from bob' }))
  const big = await alice.page.evaluate(() => window.sendToAll({ length: 40000 }))
  const receivedBy = c => c.page.evaluate(() => window.received)
  await until('bob receives', async () => (await receivedBy(bob)).length >= 2)
  await until('alice receives', async () => (await receivedBy(alice)).length >= 1)
  const atBob = await receivedBy(bob)
  const atAlice = await receivedBy(alice)
  assert.equal(atBob[0].text, 'hello from alice')
  assert.equal(atBob[0].from, aliceSession)
  assert.deepEqual([atBob[1].length, atBob[1].checksum], [40000, big])
  assert.equal(atAlice[0].text, 'hello from bob')
  assert.equal(atAlice[0].from, bobSession)

  // Bob leaves: the client's unload handler sends its delete; Alice sees
  // peerclose. `close({ runBeforeUnload })` does not wait for the page to
  // go, and closing Bob's browser context at once could cancel the delete
  // (a keepalive fetch) before it is sent: the context stays open until
  // the worker has been seen to forget him.
  const closed = new Promise(resolve => bob.page.once('close', resolve))
  await bob.page.close({ runBeforeUnload: true })
  await closed
  await until('alice gets peerclose', async () => (await logOf(alice)).find(e => e[0] === 'peerclose' && e[1] === bobSession))

  // The worker no longer lists Bob (removed by his leave, not by expiry).
  const observer = new Peer(worker.url, room, 99)
  const res = await until('worker forgets bob', async () => {
    const r = await observer.firstPoll()
    return r.json.ps.every(p => p[0] !== bobSession) && r
  }, 10000)
  assert.deepEqual(res.json.ps.map(p => p[0]), [aliceSession])
  await bob.context.close()
  await alice.context.close()
})

test('with the hints helper, two stock clients connect and the worker paces their polls', async () => {
  const room = `browser-hints-${Date.now()}`
  const started = Date.now()
  const alice = await openClient('alice-hints', room, true)
  const bob = await openClient('bob-hints', room, true)
  const logOf = c => c.page.evaluate(() => window.p2pcfLog)
  const connected = c => until('peerconnect', async () => (await logOf(c)).find(e => e[0] === 'peerconnect'), 45000)
  await Promise.all([connected(alice), connected(bob)])
  console.log(`two browsers with hints connected in ${Date.now() - started} ms`)
  await alice.page.evaluate(() => window.sendToAll({ text: 'paced hello' }))
  await until('bob receives', async () => (await bob.page.evaluate(() => window.received)).length >= 1)
  // The helper read the worker's hints and scheduled the next poll from the latest.
  // (Read in one turn of the page, between two steps.)
  const state = await until('the next poll scheduled from a hint', () => alice.page.evaluate(() => {
    const { client, hints } = window
    const last = hints.last
    const scheduled = !client.isSending && last !== null && client.nextStepTime === last.at + last.ms
    return scheduled && { received: hints.received, mode: last.mode, at: last.at, ms: last.ms, leftFetchAlone: window.hintsLeftFetchAlone }
  }), 15000)
  // ...and the client's next poll came when the hint said, not before (its step
  // timer ticks every 500 ms; the slack is for a loaded machine).
  const due = state.at + state.ms
  const next = await until('the next poll', () => alice.page.evaluate(after => window.requestTimes.find(t => t > after), state.at), 40000)
  assert.ok(next >= due - 20 && next <= due + 1500, `next poll ${next - state.at} ms after the hinted response; hint ${state.ms} ms (${state.mode})`)
  assert.ok(state.received > 0, 'hints reached the page (Server-Timing is readable cross-origin)')
  assert.equal(state.leftFetchAlone, true, 'the helper replaces no global')
  assert.ok(['fast', 'slow', 'idle'].includes(state.mode), JSON.stringify(state))
  const requests = await alice.page.evaluate(() => window.requests)
  console.log(`alice made ${requests} signalling requests in ${Math.round((Date.now() - started) / 1000)} s`)
  await alice.context.close()
  await bob.context.close()
})

test('the status page renders for a person: a screenshot, the bucket state, the config', async () => {
  const context = await browser.newContext({ viewport: { width: 900, height: 900 } })
  const page = await context.newPage()
  const res = await page.goto(worker.url + '/')
  assert.equal(res.status(), 200)
  assert.equal(await page.locator('#badge').innerText(), 'Ready')
  assert.match(await page.locator('#bucket').innerText(), /configured and answering/)
  const config = await page.locator('#config').innerText()
  assert.match(config, /Poll hints/)
  assert.match(config, /Request body/)
  assert.match(await page.locator('pre').innerText(), new RegExp(`workerUrl: '${worker.url}'`))
  mkdirSync(new URL('../../test-results/', import.meta.url), { recursive: true })
  const path = new URL('../../test-results/status-page.png', import.meta.url).pathname
  await page.screenshot({ path, fullPage: true })
  assert.ok(statSync(path).size > 10000, 'a real screenshot')
  console.log(`status page screenshot: ${path}`)
  await context.close()
})
