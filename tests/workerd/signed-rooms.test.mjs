// Signed rooms in the built worker: an id signed by the client package's
// signRoom (WebCrypto, in Node) is served in both protocols and for
// GET /turn; unsigned, forged and expired ids get 403 with the reason and
// cost no R2 operation. The same holds for y-webrtc's namespaces and
// PeerJS's keys.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { signRoom } from 'p2pcf-rs-client/sign-room'
import { connectSocket, startWorker, r2Ops } from './harness.mjs'

const SECRET = 'a-room-secret-from-wrangler-secret-put'
const FP = 'q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k='

const post = (url, body) => fetch(url, {
  method: 'POST',
  headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify(body)
})

test('ids signed with signRoom are served; unsigned, forged and expired ones are refused for free', async () => {
  const worker = await startWorker({
    vars: { ROOM_SECRET: SECRET, TURN_URLS: 'turn:127.0.0.1:3478', TURN_SHARED_SECRET: 'turn-secret' }
  })
  try {
    const good = await signRoom('team-chat', SECRET, { expiresInS: 600 })
    assert.match(good, /^team-chat_\d{10}_[A-Za-z0-9_-]{16}$/)
    const expired = await signRoom('team-chat', SECRET, { expiresInS: -1 })
    const other = await signRoom('team-chat', 'not-the-secret', { expiresInS: 600 })
    const cases = [
      [good, 200, null],
      ['team-chat', 403, 'Room id not signed: this deployment serves only signed room ids'],
      [other, 403, 'Room id signature does not match'],
      [expired, 403, 'Room id expired: ask for a new one']
    ]
    for (const [room, status, text] of cases) {
      const d = ['session-1', 'client-1', false, FP, Date.now(), []]
      const p2pcf = await post(worker.url, { r: room, k: 'ctx-1', d, t: Date.now(), x: 120000, p: [] })
      const relay = await post(worker.url + '/relay/v1', { room, meta: null })
      const turn = await fetch(worker.url + '/turn', { headers: { 'X-Room': room } })
      for (const [what, res] of [['p2pcf', p2pcf], ['relay', relay], ['turn', turn]]) {
        const body = await res.text()
        assert.equal(res.status, status, `${what} ${room}: ${body}`)
        if (text) {
          assert.equal(body, text, `${what} ${room}`)
          if (what !== 'turn') assert.deepEqual(r2Ops(res), { a: 0, b: 0 }, `${what} ${room}`)
        }
      }
    }
  } finally {
    await worker.stop()
  }
})

test('signed rooms hold for y-webrtc namespaces and PeerJS keys (and so for Trystero)', async () => {
  const worker = await startWorker({ vars: { ROOM_SECRET: SECRET } })
  try {
    const good = await signRoom('team-chat', SECRET, { expiresInS: 600 })
    const unsigned = 'Room id not signed: this deployment serves only signed room ids'
    // y-webrtc (and Trystero's strategy, which uses its namespaces): the upgrade is refused.
    const ok = connectSocket(worker.url, `/y-webrtc/${good}`)
    await ok.opened
    ok.ws.close()
    await assert.rejects(connectSocket(worker.url, '/y-webrtc/team-chat').opened, e => e.status === 403 && e.body === unsigned)
    // PeerJS: the id call, then the socket (refused with PeerJS's ERROR frame).
    assert.equal((await fetch(`${worker.url}/peerjs/${good}/id`)).status, 200)
    const id = await fetch(`${worker.url}/peerjs/team-chat/id`)
    assert.deepEqual([id.status, await id.text()], [403, unsigned])
    const peer = connectSocket(worker.url, `/peerjs/peerjs?key=${good}&id=ann&token=t`)
    await peer.opened
    assert.deepEqual(await peer.next(), { type: 'OPEN' })
    peer.ws.close()
    const refused = connectSocket(worker.url, '/peerjs/peerjs?key=team-chat&id=ann&token=t')
    await refused.opened
    assert.deepEqual(await refused.next(), { type: 'ERROR', payload: { msg: unsigned } })
    assert.equal((await refused.closed).code, 4403)
  } finally {
    await worker.stop()
  }
})
