// TURN with real parts: Debian's coturn on 127.0.0.1 (TURN REST API,
// `use-auth-secret`), the built worker minting credentials for it, and
// Chromium. Chromium gathers relay candidates with the worker's
// credentials and none with tampered or expired ones; two stock p2pcf
// clients with relay-only ICE connect through coturn.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac, randomBytes } from 'node:crypto'
import { startWorker } from '../workerd/harness.mjs'
import { startBrowser, startCoturn, until } from './support.mjs'

const SECRET = randomBytes(18).toString('base64')
let coturn, worker, chromium

before(async () => {
  coturn = await startCoturn(SECRET)
  worker = await startWorker({
    vars: {
      TURN_URLS: `turn:127.0.0.1:${coturn.port}?transport=udp,turn:127.0.0.1:${coturn.port}?transport=tcp`,
      TURN_SHARED_SECRET: SECRET,
      TURN_TTL_S: '600'
    }
  })
  chromium = await startBrowser()
})

after(async () => {
  await chromium?.stop()
  await worker?.stop()
  coturn?.stop()
})

const turnUrl = () => `turn:127.0.0.1:${coturn.port}?transport=udp`

test('Chromium allocates on coturn with the worker\'s credentials, and not with tampered or expired ones', async () => {
  const res = await fetch(worker.url + '/turn', { headers: { Origin: 'https://app.example' } })
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('access-control-allow-origin'), '*')
  const { iceServers, expiresAt } = await res.json()
  assert.ok(expiresAt > Date.now() + 590000 && expiresAt <= Date.now() + 600000)
  const [server] = iceServers
  const { context, page } = await chromium.openClient({ client: 'probe', room: 'turn-probe', worker: 'http://127.0.0.1:9' })
  const relays = servers => page.evaluate(s => window.relayCandidates(s), servers)

  assert.ok(await relays([{ urls: [turnUrl()], username: server.username, credential: server.credential }]) >= 1,
    'a relay candidate with minted credentials')
  const tampered = server.credential.slice(0, -4) + (server.credential.endsWith('AAA=') ? 'BBB=' : 'AAA=')
  assert.equal(await relays([{ urls: [turnUrl()], username: server.username, credential: tampered }]), 0, 'tampered credential refused')
  const past = `${Math.floor(Date.now() / 1000) - 60}:p2pcf-expired`
  const pastCredential = createHmac('sha1', SECRET).update(past).digest('base64')
  assert.equal(await relays([{ urls: [turnUrl()], username: past, credential: pastCredential }]), 0, 'expired credential refused')
  await context.close()
  assert.match(coturn.log(), /401|Unauthorized|stale|expired/i, 'coturn logged the refusals')
})

test('two stock p2pcf clients with relay-only ICE connect through coturn with minted credentials', async () => {
  const room = `turn-room-${Date.now()}`
  const started = Date.now()
  const open = client => chromium.openClient({ client, room, worker: worker.url, turn: '1' })
  const alice = await open('alice-turn')
  const bob = await open('bob-turn')
  const logOf = c => c.page.evaluate(() => window.p2pcfLog)
  const connected = c => until('peerconnect over the relay', async () => (await logOf(c)).find(e => e[0] === 'peerconnect'), 60000)
  await Promise.all([connected(alice), connected(bob)])
  console.log(`two browsers connected over TURN in ${Date.now() - started} ms`)
  for (const c of [alice, bob]) {
    const [pair, ...more] = await c.page.evaluate(() => window.selectedCandidateTypes())
    assert.equal(more.length, 0)
    // Our end sends through our relay; the far end is the other's relay
    // address on coturn (learnt from its checks, so "prflx" or "relay").
    assert.equal(pair.local, 'relay', JSON.stringify(pair))
    assert.ok(pair.remotePort >= coturn.relayBase && pair.remotePort <= coturn.relayBase + 200, JSON.stringify(pair))
    const creds = await c.page.evaluate(() => window.turnCredentials())
    assert.match(creds.iceServers[0].username, /^\d+:p2pcf-/)
    const client = await c.page.evaluate(() => ({ turn: window.client.turnIceServers, stun: window.client.stunIceServers }))
    assert.deepEqual(client.turn, creds.iceServers, 'turnIceServers set')
    assert.deepEqual(client.stun, creds.iceServers, 'and stunIceServers, so non-symmetric pairs use them too')
  }
  await alice.page.evaluate(() => window.sendToAll({ text: 'hello over the relay' }))
  await until('bob receives', async () => (await bob.page.evaluate(() => window.received)).length >= 1)
  assert.equal((await bob.page.evaluate(() => window.received))[0].text, 'hello over the relay')
  await alice.context.close()
  await bob.context.close()
})
