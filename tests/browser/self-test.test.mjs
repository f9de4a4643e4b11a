// The status page's self-test in Chromium: one click runs two stock p2pcf
// clients (served by the worker's static assets) that connect through this
// very worker and swap a message; the page shows each step with its time.
// With TURN set up (a real coturn here), it also allocates a relay with a
// minted credential. A deployment that refuses the page's origin fails at
// the first request, one whose TURN secret does not match its server fails
// at the TURN step, and the page says what to check each time.
// Screenshots: test-results/self-test*.png.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { chromium as playwright } from 'playwright-core'
import { startWorker } from '../workerd/harness.mjs'
import { startCoturn } from './support.mjs'

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']
const results = new URL('../../test-results/', import.meta.url)

let browser
const cleanups = []
after(async () => {
  await browser?.close()
  for (const stop of cleanups) await stop()
})

/** Opens the status page, clicks the self-test, waits for its verdict. */
async function runSelfTest (worker, screenshot) {
  browser ??= await playwright.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true })
  const context = await browser.newContext({ viewport: { width: 900, height: 1000 } })
  const page = await context.newPage()
  page.on('pageerror', e => console.log(`[status page] page error: ${e.message}`))
  await page.goto(worker.url + '/')
  const button = page.locator('#self-test-run')
  await button.waitFor()
  assert.equal(await button.isEnabled(), true, 'the script loaded from the static assets')
  const clicked = Date.now()
  await button.click()
  await page.waitForSelector('#self-test-result[data-result=passed], #self-test-result[data-result=failed]', { timeout: 90000 })
  const elapsed = Date.now() - clicked
  const steps = await page.locator('#self-test-steps li').evaluateAll(lis => lis.map(li => ({
    step: li.dataset.step,
    state: li.dataset.state,
    time: li.querySelector('.time').textContent,
    detail: li.querySelector('.detail').textContent
  })))
  const verdict = await page.locator('#self-test-result').innerText()
  const room = await page.locator('#self-test-room').innerText()
  mkdirSync(results, { recursive: true })
  await page.screenshot({ path: new URL(screenshot, results).pathname, fullPage: true })
  await context.close()
  return { steps, verdict, room, elapsed }
}

const ops = lines => lines.map(l => { try { return JSON.parse(l) } catch { return null } })
  .filter(l => l?.r2)
  .reduce((sum, l) => ({ requests: sum.requests + 1, a: sum.a + l.r2.a, b: sum.b + l.r2.b }), { requests: 0, a: 0, b: 0 })

test('with signed rooms, the self-test runs in a room the worker signed for it, TURN included', { timeout: 120000 }, async () => {
  const secret = randomBytes(18).toString('base64')
  const coturn = await startCoturn(secret)
  cleanups.push(coturn.stop)
  const worker = await startWorker({
    vars: { TURN_URLS: `turn:127.0.0.1:${coturn.port}?transport=udp`, TURN_SHARED_SECRET: secret, ROOM_SECRET: 'the-room-secret' }
  })
  cleanups.push(worker.stop)
  const { steps, verdict, room } = await runSelfTest(worker, 'self-test-signed.png')
  for (const s of steps) console.log(`  ${s.state.padEnd(7)} ${s.step.padEnd(8)} ${s.time.padStart(6)}  ${s.detail}`)
  assert.match(verdict, /^Passed in/, JSON.stringify(steps))
  assert.ok(steps.every(s => s.state === 'ok'), JSON.stringify(steps))
  assert.match(room, /^self-test-[0-9a-f]{12}_\d{10}_[A-Za-z0-9_-]{16}$/, 'a room the worker signed')
  assert.match(steps.find(s => s.step === 'turn').detail, /^a relay allocated \(udp, port \d+\)/)
  // The plain room the page would pick without a signature is refused.
  const res = await fetch(worker.url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ r: 'self-test-0123456789ab', k: 'observer' }) })
  assert.equal(res.status, 403)
})

test('one click: two stock clients connect through this worker, swap a message and leave', { timeout: 120000 }, async () => {
  const secret = randomBytes(18).toString('base64')
  const coturn = await startCoturn(secret)
  cleanups.push(coturn.stop)
  const worker = await startWorker({
    vars: { TURN_URLS: `turn:127.0.0.1:${coturn.port}?transport=udp`, TURN_SHARED_SECRET: secret }
  })
  cleanups.push(worker.stop)
  const { steps, verdict, room, elapsed } = await runSelfTest(worker, 'self-test.png')
  for (const s of steps) console.log(`  ${s.state.padEnd(7)} ${s.step.padEnd(8)} ${s.time.padStart(6)}  ${s.detail}`)
  assert.match(verdict, /^Passed in/, JSON.stringify(steps))
  assert.deepEqual(steps.map(s => s.step), ['webrtc', 'reach', 'join', 'connect', 'message', 'leave', 'turn'])
  assert.ok(steps.every(s => s.state === 'ok'), JSON.stringify(steps))
  assert.match(room, /^self-test-[0-9a-f]{12}$/, 'a room of its own')
  assert.match(steps.find(s => s.step === 'message').detail, /round trip \d+ ms/)
  assert.match(steps.find(s => s.step === 'turn').detail, /^a relay allocated \(udp, port \d+\)/)
  // It left: a poll of its room now lists nobody (the page checked it too).
  const res = await fetch(worker.url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ r: room, k: 'test-observer' }) })
  assert.deepEqual((await res.json()).ps, [])
  const cost = ops(worker.logs)
  console.log(`self-test passed in ${elapsed} ms: ${cost.requests} worker requests, R2 ${cost.a} Class A + ${cost.b} Class B (status page included)`)
  assert.ok(cost.a <= 12 && cost.requests <= 40, `cheap for the owner: ${JSON.stringify(cost)}`)
})

test('a deployment that refuses the page\'s origin: the self-test stops at the first request and says what to change', { timeout: 60000 }, async () => {
  const worker = await startWorker({ vars: { ALLOWED_ORIGINS: 'https://app.example' } })
  cleanups.push(worker.stop)
  const { steps, verdict } = await runSelfTest(worker, 'self-test-refused.png')
  assert.match(verdict, /^Failed at/)
  const reach = steps.find(s => s.step === 'reach')
  assert.equal(reach.state, 'failed')
  assert.match(reach.detail, /ALLOWED_ORIGINS/)
  assert.ok(reach.detail.includes(worker.url), 'names the origin to add')
  assert.ok(steps.filter(s => s.step !== 'webrtc' && s.step !== 'reach').every(s => s.state === 'pending'))
  assert.equal(ops(worker.logs).a, 0, 'nothing was written')
})

test('a TURN secret that does not match the server: signalling passes, the TURN step fails and says what to check', { timeout: 120000 }, async () => {
  const coturn = await startCoturn(randomBytes(18).toString('base64'))
  cleanups.push(coturn.stop)
  const worker = await startWorker({
    vars: { TURN_URLS: `turn:127.0.0.1:${coturn.port}?transport=udp`, TURN_SHARED_SECRET: 'not-the-servers-secret' }
  })
  cleanups.push(worker.stop)
  const { steps, verdict } = await runSelfTest(worker, 'self-test-turn-mismatch.png')
  assert.match(verdict, /^Failed at .TURN/)
  assert.ok(steps.filter(s => s.step !== 'turn').every(s => s.state === 'ok'), JSON.stringify(steps))
  const turn = steps.find(s => s.step === 'turn')
  assert.equal(turn.state, 'failed')
  assert.match(turn.detail, /TURN_SHARED_SECRET/)
  assert.match(coturn.log(), /check_stun_auth|401|Unauthorized/i, 'coturn refused the credential')
})
