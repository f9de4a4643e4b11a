// The bad-input matrix: malformed and hostile requests against the built
// worker in workerd. Every one answers 4xx with a short plain reason and CORS
// headers; none is a 5xx; none changes what is stored in R2. (Methods workerd
// itself does not know, like FOO, get its own 501 before the worker runs.)
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startWorker, FINGERPRINT } from './harness.mjs'

let worker
before(async () => { worker = await startWorker() })
after(async () => { await worker?.stop() })

const now = () => Date.now()
const d = (over = {}) => {
  const v = ['session-bad', 'client-bad', false, FINGERPRINT, 1700000000000, ['203.0.113.7']]
  for (const [i, x] of Object.entries(over)) v[i] = x
  return v
}
const body = (over = {}) => JSON.stringify({ r: 'room-bad-input', k: 'ctx-bad', d: d(), t: now(), x: 120000, p: [], ...over })
const nested = depth => '['.repeat(depth) + ']'.repeat(depth)
const relay = (over = {}) => JSON.stringify({ room: 'room-bad-input', ...over })

// [name, raw body or () => raw body, extra request options]
const cases = [
  ['empty body', ''],
  ['not JSON', 'hello'],
  ['truncated object', '{"r":"room-bad-input","k":'],
  ['truncated array in d', '{"r":"room-bad-input","k":"x","d":['],
  ['trailing garbage', '{"r":"room-bad-input","k":"x"} x'],
  ['JSON array', '[1,2,3]'],
  ['JSON string', '"room"'],
  ['JSON number', '42'],
  ['JSON null', 'null'],
  ['room id a number', () => body({ r: 12345 })],
  ['room id an array', () => body({ r: ['room-bad-input'] })],
  ['room id too short', () => body({ r: 'abc' })],
  ['room id too long', () => body({ r: 'r'.repeat(65) })],
  ['room id with /', () => body({ r: 'room/bad' })],
  ['room id with ..', () => body({ r: '..room' })],
  ['room id with %2F', () => body({ r: 'room%2Fbad' })],
  ['room id with a space', () => body({ r: 'room bad' })],
  ['room id in unicode', () => body({ r: 'rüüm-bad' })],
  ['context id empty', () => body({ k: '' })],
  ['context id an object', () => body({ k: { a: 1 } })],
  ['context id too long', () => body({ k: 'k'.repeat(65) })],
  ['d a string', () => body({ d: 'data' })],
  ['d of 5', () => body({ d: d().slice(0, 5) })],
  ['d of 7', () => body({ d: [...d(), 1] })],
  ['session id a number', () => body({ d: d({ 0: 7 }) })],
  ['session id too long', () => body({ d: d({ 0: 's'.repeat(65) }) })],
  ['client id null', () => body({ d: d({ 1: null }) })],
  ['symmetric a string', () => body({ d: d({ 2: 'false' }) })],
  ['fingerprint a number', () => body({ d: d({ 3: 44 }) })],
  ['fingerprint of 43', () => body({ d: d({ 3: FINGERPRINT.slice(1) }) })],
  ['fingerprint bad base64', () => body({ d: d({ 3: '!'.repeat(44) }) })],
  ['joined at zero', () => body({ d: d({ 4: 0 }) })],
  ['joined at a string', () => body({ d: d({ 4: '1700000000000' }) })],
  ['IPs an object', () => body({ d: d({ 5: { ip: '1.2.3.4' } }) })],
  ['IP out of range', () => body({ d: d({ 5: ['1.2.3.256'] }) })],
  ['IP with a prefix', () => body({ d: d({ 5: ['192.0.2.0/24'] }) })],
  ['IP a host name', () => body({ d: d({ 5: ['localhost'] }) })],
  ['IPv6 garbage', () => body({ d: d({ 5: ['::::'] }) })],
  ['t a string', () => body({ t: 'now' })],
  ['t negative', () => body({ t: -1 })],
  ['t huge', () => body({ t: 1e300 })],
  ['t past 2^53 ms', () => body({ t: 2 ** 53 + 4096 })],
  ['t out of f64 range', () => body({}).replace(/"t":\d+/, '"t":1e400')],
  ['x zero', () => body({ x: 0 })],
  ['x negative', () => body({ x: -5 })],
  ['x over a day', () => body({ x: 86400001 })],
  ['x a string', () => body({ x: '120000' })],
  ['p an object', () => body({ p: { a: 1 } })],
  ['p of numbers', () => body({ p: [1] })],
  ['package without recipient', () => body({ p: [[]] })],
  ['package recipient a number', () => body({ p: [[5, 'x']] })],
  ['deep nesting in p', () => body({}).replace('"p":[]', `"p":${nested(5000)}`)],
  ['deep nesting in d', () => body({}).replace(/"d":\[[^\]]*\]\]/, `"d":${nested(5000)}`)],
  ['duplicated key', '{"r":"room-bad-input","r":"room-other","k":"x"}'],
  ['too many packages', () => body({ p: Array.from({ length: 65 }, () => ['session-x', 'session-bad', null, null, null, 'u', 'p', 1, []]) })],
  ['body over 64 KiB', () => body({ pad: 'x'.repeat(70000) })],
  ['leave without a delete key', () => body({ p: undefined }), { leave: true }],
  ['leave with a numeric delete key', () => body({ p: undefined, dk: 5 }), { leave: true }],
  ['no content type', () => body(), { contentType: null }],
  ['text/plain', () => body(), { contentType: 'text/plain' }],
  ['application/jsonp', () => body(), { contentType: 'application/jsonp' }],
  ['multipart', () => body(), { contentType: 'multipart/form-data; boundary=x' }],
  ['method PUT', () => body(), { method: 'PUT' }],
  ['method PATCH', () => body(), { method: 'PATCH' }],
  ['method DELETE without a key', () => body({ p: undefined }), { method: 'DELETE' }],
  ['huge Origin header', () => body(), { headers: { Origin: 'https://' + 'o'.repeat(4000) + '.example' } }],
  ['huge Content-Type header', () => body(), { contentType: 'text/plain; x=' + 'y'.repeat(8000) }],
  // The relay API (POST /relay/v1): the same rules.
  ['relay: not JSON', 'hello', { path: '/relay/v1' }],
  ['relay: no room', '{}', { path: '/relay/v1' }],
  ['relay: bad room', () => relay({ room: 'r/..' }), { path: '/relay/v1' }],
  ['relay: id without token', () => relay({ id: 'abc' }), { path: '/relay/v1' }],
  ['relay: token without id', () => relay({ token: 'abc' }), { path: '/relay/v1' }],
  ['relay: unknown member', () => relay({ id: 'nobody-here', token: 'x'.repeat(32) }), { path: '/relay/v1' }],
  ['relay: id too long', () => relay({ id: 'i'.repeat(65), token: 'x' }), { path: '/relay/v1' }],
  ['relay: meta over 1 KiB', () => relay({ meta: { pad: 'm'.repeat(2000) } }), { path: '/relay/v1' }],
  ['relay: send not a list', () => relay({ send: { to: '*' } }), { path: '/relay/v1' }],
  ['relay: message without seq', () => relay({ send: [{ to: '*', data: 1 }] }), { path: '/relay/v1' }],
  ['relay: negative seq', () => relay({ send: [{ to: '*', seq: -1, data: 1 }] }), { path: '/relay/v1' }],
  ['relay: seq going down', () => relay({ send: [{ to: '*', seq: 2, data: 1 }, { to: '*', seq: 1, data: 1 }] }), { path: '/relay/v1' }],
  ['relay: recipient a number', () => relay({ send: [{ to: 5, seq: 1, data: 1 }] }), { path: '/relay/v1' }],
  ['relay: message over 16 KiB', () => relay({ send: [{ to: '*', seq: 1, data: 'd'.repeat(17000) }] }), { path: '/relay/v1' }],
  ['relay: 65 messages', () => relay({ send: Array.from({ length: 65 }, (_, i) => ({ to: '*', seq: i + 1, data: i })) }), { path: '/relay/v1' }],
  ['relay: after not a map', () => relay({ after: [1, 2] }), { path: '/relay/v1' }],
  ['relay: after a negative seq', () => relay({ after: { someone: -3 } }), { path: '/relay/v1' }],
  ['relay: deep nesting in data', () => relay({}).replace('}', `,"send":[{"to":"*","seq":1,"data":${nested(5000)}}]}`), { path: '/relay/v1' }],
  ['relay: text/plain', () => relay({}), { path: '/relay/v1', contentType: 'text/plain' }],
  ['relay: seq 0', () => relay({ id: 'nobody-here', token: 'x'.repeat(32), send: [{ to: '*', seq: 0, data: 1 }] }), { path: '/relay/v1' }],
  ['relay: a join with messages', () => relay({ send: [{ to: '*', seq: 1, data: 1 }] }), { path: '/relay/v1' }],
  ['relay: a join that leaves', () => relay({ leave: true }), { path: '/relay/v1' }],
  ['relay: nonce too short', () => relay({ nonce: 'abc' }), { path: '/relay/v1' }],
  ['relay: nonce with a slash', () => relay({ nonce: 'a/'.repeat(10) }), { path: '/relay/v1' }],
  // PeerJS's HTTP calls (its socket's bad frames: tests/workerd/peerjs.test.mjs).
  ['peerjs: id for a short key', undefined, { method: 'GET', path: '/peerjs/ab/id', contentType: null }],
  ['peerjs: id for a key with a dot', undefined, { method: 'GET', path: '/peerjs/a.b.c/id', contentType: null }],
  ['peerjs: id for a key with a slash', undefined, { method: 'GET', path: '/peerjs/app-1%2Fx/id', contentType: null }],
  ['peerjs: the peer list', undefined, { method: 'GET', path: '/peerjs/peerjs/peers', contentType: null }],
  ['peerjs: a socket path without upgrade', undefined, { method: 'POST', path: '/peerjs/peerjs?key=peerjs&id=a&token=t' }]
]

async function snapshot () {
  const listed = await (await worker.bucket()).list()
  return listed.objects.map(o => `${o.key} ${o.etag}`).sort()
}

test(`bad-input matrix: ${cases.length} cases, each a 4xx with a reason and CORS, nothing stored`, { timeout: 120000 }, async () => {
  assert.ok(cases.length >= 40)
  const before = await snapshot()
  const failures = []
  for (const [name, raw, opts = {}] of cases) {
    const headers = { ...(opts.headers || {}) }
    if (opts.contentType !== null) headers['Content-Type'] = opts.contentType || 'application/json'
    if (opts.leave) headers['X-Worker-Method'] = 'DELETE'
    const send = () => fetch(worker.url + (opts.path || ''), {
      method: opts.method || 'POST',
      headers,
      body: opts.method === 'GET' ? undefined : typeof raw === 'function' ? raw() : raw
    })
    let res
    try {
      res = await send()
    } catch (e) {
      // A case answered before its body was read (413) can leave the kept-alive
      // connection reset under the local assets router; the next case then
      // fails in transport. Once more on a fresh connection; a worker that
      // does not answer fails again.
      if (e.cause?.code !== 'ECONNRESET') throw e
      try {
        res = await send()
      } catch (again) {
        failures.push(`${name}: no answer (${again.cause?.message ?? again.message})`)
        continue
      }
    }
    const text = await res.text()
    const ok = res.status >= 400 && res.status < 500 &&
      res.headers.get('access-control-allow-origin') === '*' &&
      text.length > 0 && text.length < 120 && !text.includes('\n')
    if (!ok) failures.push(`${name}: ${res.status} ${JSON.stringify(text.slice(0, 120))} cors=${res.headers.get('access-control-allow-origin')}`)
  }
  assert.deepEqual(failures, [])
  assert.deepEqual(await snapshot(), before, 'stored state unchanged')
})
