// GET /turn in the built worker: Cloudflare's TURN API answered by a local
// stand-in that checks the documented request (method, path, bearer token,
// ttl), its failure answers, and the not-configured 404.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { startWorker } from './harness.mjs'

const KEY_ID = 'a1b2c3d4e5f60718293a4b5c6d7e8f90'
const TOKEN = 'the-turn-key-api-token'
let api, apiUrl, seen = [], answer

const CF_ANSWER = {
  iceServers: [
    { urls: ['stun:stun.cloudflare.com:3478', 'stun:stun.cloudflare.com:53'] },
    {
      urls: ['turn:turn.cloudflare.com:3478?transport=udp', 'turn:turn.cloudflare.com:53?transport=udp',
        'turn:turn.cloudflare.com:3478?transport=tcp', 'turns:turn.cloudflare.com:5349?transport=tcp',
        'turns:turn.cloudflare.com:443?transport=tcp'],
      username: 'cf-username',
      credential: 'cf-credential'
    }
  ]
}

before(async () => {
  api = http.createServer((req, res) => {
    let body = ''
    req.on('data', d => { body += d })
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, auth: req.headers.authorization, type: req.headers['content-type'], body })
      const [status, json] = answer
      res.writeHead(status, { 'Content-Type': 'application/json' })
      res.end(JSON.stringify(json))
    })
  })
  await new Promise(resolve => api.listen(0, '127.0.0.1', resolve))
  apiUrl = `http://127.0.0.1:${api.address().port}`
})

after(() => api?.close())

const cloudflareWorker = base => startWorker({
  vars: { CF_TURN_KEY_ID: KEY_ID, CF_TURN_KEY_API_TOKEN: TOKEN, CF_TURN_API_BASE: base, TURN_TTL_S: '1800' }
})

test('Cloudflare kind: the documented request, port-53 URLs dropped, failures as 502/503', async () => {
  const worker = await cloudflareWorker(apiUrl)
  try {
    seen = []
    answer = [201, CF_ANSWER]
    let res = await fetch(worker.url + '/turn')
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('access-control-allow-origin'), '*')
    const body = await res.json()
    assert.deepEqual(seen, [{
      method: 'POST',
      url: `/v1/turn/keys/${KEY_ID}/credentials/generate-ice-servers`,
      auth: `Bearer ${TOKEN}`,
      type: 'application/json',
      body: '{"ttl":1800}'
    }])
    const urls = body.iceServers.flatMap(s => s.urls)
    assert.ok(urls.every(u => !/:53(\?|$)/.test(u)), urls.join(' '))
    assert.equal(urls.length, 5)
    assert.equal(body.iceServers[1].credential, 'cf-credential')
    assert.ok(Math.abs(body.expiresAt - (Date.now() + 1800000)) < 5000)

    for (const [status, json, expected] of [
      [401, { success: false }, 502],
      [404, { success: false }, 502],
      [201, { iceServers: [] }, 502],
      [500, { success: false }, 503]
    ]) {
      answer = [status, json]
      res = await fetch(worker.url + '/turn')
      const text = await res.text()
      assert.equal(res.status, expected, `${status} -> ${text}`)
      assert.equal(res.headers.get('access-control-allow-origin'), '*')
      assert.ok(!text.includes(TOKEN))
    }
    // The status page names the kind and the last call, never the token.
    const page = await (await fetch(worker.url + '/')).text()
    assert.match(page, /Cloudflare TURN/)
    assert.match(page, /last call: failed/)
    assert.ok(!page.includes(TOKEN))
    assert.ok(worker.logs.every(l => !l.includes(TOKEN)), 'the token stays out of logs')
  } finally {
    await worker.stop()
  }
  // Nobody answering: 503 with Retry-After.
  const down = await cloudflareWorker('http://127.0.0.1:9')
  try {
    const res = await fetch(down.url + '/turn')
    assert.equal(res.status, 503)
    assert.equal(res.headers.get('retry-after'), '10')
    assert.equal(await res.text(), 'The TURN service could not be reached; retry later')
  } finally {
    await down.stop()
  }
})

test('not configured: GET /turn is a 404 that says how to turn it on', async () => {
  const worker = await startWorker()
  try {
    const res = await fetch(worker.url + '/turn')
    assert.equal(res.status, 404)
    assert.match(await res.text(), /TURN_URLS.*CF_TURN_KEY_ID/)
    assert.equal(res.headers.get('access-control-allow-origin'), '*')
    const preflight = await fetch(worker.url + '/turn', {
      method: 'OPTIONS',
      headers: { Origin: 'https://app.example', 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'content-type' }
    })
    assert.equal(preflight.status, 204)
  } finally {
    await worker.stop()
  }
})
